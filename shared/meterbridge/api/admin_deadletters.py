"""Admin routes for dead letters (``/admin/deadletters``): list and retry (issue 5).

A dead letter is an event OpenMeter rejected (400) after the flush isolated it. Retrying puts
it back in the outbox unchanged (same ``id`` and ``source``): useful once OpenMeter accepts it
(a meter was added, a bug fixed). ``id`` in these routes is opaque (URL-safe base64 of the
event's key), as listed by ``GET /admin/deadletters``.
"""

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from meterbridge.api.admin_auth import require_admin
from meterbridge.api.errors import error_responses
from meterbridge.logic import deadletters
from meterbridge.models.deadletter import (
    DeadLetter,
    DeadLetterPage,
    DeadLetterRetry,
    DeadLetterRetryResult,
)

router = APIRouter(
    prefix="/admin/deadletters", tags=["admin"], dependencies=[Depends(require_admin)]
)


@router.get("", responses=error_responses(400, 401))
async def list_deadletters(
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=2000)] = None,
) -> DeadLetterPage:
    """One page of dead letters, oldest first; pass ``next_cursor`` back as ``cursor``."""
    return await asyncio.to_thread(deadletters.list_dead_letters, limit, cursor)


@router.post("/retry", responses=error_responses(400, 401))
async def retry_deadletters(body: DeadLetterRetry) -> DeadLetterRetryResult:
    """Retry the listed ids, or with ``{"all": true}`` up to ``limit`` of them."""
    return await asyncio.to_thread(deadletters.retry_dead_letters, body)


@router.post("/{dead_id}/retry", responses=error_responses(401, 404, 409))
async def retry_deadletter(dead_id: str) -> DeadLetter:
    """Put one dead letter back in the outbox; the next flush sends it."""
    return await asyncio.to_thread(deadletters.retry_dead_letter, dead_id)
