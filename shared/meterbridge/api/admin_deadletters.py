"""Admin routes for dead letters (``/admin/deadletters``): list and retry (issue 5)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from meterbridge.api.admin_auth import require_admin
from meterbridge.api.errors import error_responses
from meterbridge.errors import NotImplementedYet

router = APIRouter(
    prefix="/admin/deadletters", tags=["admin"], dependencies=[Depends(require_admin)]
)


@router.get("", responses=error_responses(401, 501))
async def list_deadletters() -> None:
    raise NotImplementedYet("dead letters are not available yet")
