"""Placeholder for the streaming routes until the streaming service lands (issue 7)."""

from __future__ import annotations

from fastapi import APIRouter

from meterbridge.api.errors import error_responses
from meterbridge.errors import NotImplementedYet

router = APIRouter(prefix="/v1", tags=["streaming"])


@router.get("/stream", responses=error_responses(401, 501))
async def stream() -> None:
    raise NotImplementedYet("live streaming is not available yet")
