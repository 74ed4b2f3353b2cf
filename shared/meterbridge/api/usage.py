"""The usage API (``/v1/events``, ``/v1/usage``): tenant key auth, ingest, usage query."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from meterbridge.api.errors import error_responses, install_error_handlers
from meterbridge.errors import NotImplementedYet

router = APIRouter(prefix="/v1", tags=["usage"])


@router.post("/events", status_code=202, responses=error_responses(400, 401, 403, 413, 415, 429))
async def ingest_events() -> dict[str, int]:
    """Accept one CloudEvent or a batch (issue 4)."""
    raise NotImplementedYet("usage ingest is not available yet")


@router.get("/usage", responses=error_responses(400, 401, 403))
async def get_usage() -> dict[str, object]:
    """Usage of the current billing period per meter (issue 4)."""
    raise NotImplementedYet("usage query is not available yet")


def create_app() -> FastAPI:
    app = FastAPI(title="meterbridge usage API", version="1")
    install_error_handlers(app)
    app.include_router(router)
    return app
