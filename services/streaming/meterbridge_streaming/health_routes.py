"""``/health/live``, ``/health/ready`` and ``/metrics`` (Prometheus text format)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from meterbridge_streaming import health
from meterbridge_streaming.metrics import render_latest

router = APIRouter(tags=["health"])


@router.get("/health/live")
async def live() -> dict[str, str]:
    """The process is up and its event loop answers."""
    return {"status": "alive"}


@router.get("/health/ready")
async def ready() -> JSONResponse:
    """200 when DynamoDB answers (NATS and OpenMeter reported, degrade only); 503 otherwise."""
    ok, body = await health.readiness()
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics() -> Response:
    body, content_type = render_latest()
    return Response(content=body, media_type=content_type)
