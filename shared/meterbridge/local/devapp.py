"""One FastAPI app serving every HTTP surface of meterbridge on one port, for local runs.

The routers are the same objects the Lambdas serve through Mangum; the Stripe webhook route
passes the raw body to the same logic the Function URL handler calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.responses import Response

from meterbridge.api import admin, admin_deadletters, health, stream, usage
from meterbridge.api.errors import install_error_handlers
from meterbridge.api.limits import BodyLimit
from meterbridge.dashboard.routes import include_dashboard
from meterbridge.errors import MeterbridgeError
from meterbridge.logic import stripe_webhook
from meterbridge.prometheus import API_REQUESTS, STRIPE_WEBHOOK_LATENCY, STRIPE_WEBHOOKS_RECEIVED


class _CountRequests(BaseHTTPMiddleware):
    """``meterbridge_api_requests_total`` by route template (not raw path) and status."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        if path != "/v1/stream":  # a stream's status is known at its start only
            API_REQUESTS.labels(route=path, status=str(response.status_code)).inc()
        return response


def create_dev_app() -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The streaming service (NATS bridge, fan-out) lives as long as the app.
        async with stream.stream_lifespan(app):
            yield

    app = FastAPI(title="meterbridge (local stack)", version="1", lifespan=lifespan)
    install_error_handlers(app)
    app.add_middleware(_CountRequests)
    # Outermost of ours: a body over its route's cap is refused before any app code reads it.
    app.add_middleware(BodyLimit)
    app.include_router(usage.router)
    app.include_router(admin.router)
    app.include_router(admin_deadletters.router)
    app.include_router(stream.router)
    app.include_router(health.router)
    include_dashboard(app)

    @app.post("/stripe/webhook", include_in_schema=False)
    async def stripe_webhook_route(request: Request) -> JSONResponse:
        body = await request.body()
        start = time.perf_counter()
        try:
            # handle() does blocking DynamoDB calls and may wait for an in-flight duplicate.
            status, payload = await asyncio.to_thread(
                stripe_webhook.handle, body, dict(request.headers)
            )
        except MeterbridgeError as exc:
            STRIPE_WEBHOOKS_RECEIVED.labels(type="unknown", outcome=exc.code).inc()
            raise
        finally:
            STRIPE_WEBHOOK_LATENCY.observe(time.perf_counter() - start)
        outcome = str(payload.get("outcome") or payload.get("error", {}).get("code", status))
        STRIPE_WEBHOOKS_RECEIVED.labels(
            type=str(payload.get("type", "other")), outcome=outcome
        ).inc()
        return JSONResponse(payload, status_code=status)

    return app
