"""The admin API (``/admin/...``): tenants, keys, plans, lifecycle, dead letters."""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI

from meterbridge.api.admin_auth import require_admin
from meterbridge.api.errors import error_responses, install_error_handlers
from meterbridge.errors import NotImplementedYet

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


@router.api_route(
    "/{path:path}",
    methods=["GET", "POST", "PATCH", "DELETE"],
    responses=error_responses(401, 501),
    include_in_schema=False,
)
async def not_yet(path: str) -> None:
    raise NotImplementedYet(f"admin route /admin/{path} is not available yet")


def create_app() -> FastAPI:
    app = FastAPI(title="meterbridge admin API", version="1")
    install_error_handlers(app)
    app.include_router(router)
    return app
