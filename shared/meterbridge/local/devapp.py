"""One FastAPI app serving every HTTP surface of meterbridge on one port, for local runs.

The routers are the same objects the Lambdas serve through Mangum; the Stripe webhook route
passes the raw body to the same logic the Function URL handler calls.
"""

from __future__ import annotations

import asyncio

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from meterbridge.api import admin, admin_deadletters, health, stream, usage
from meterbridge.api.errors import install_error_handlers
from meterbridge.logic import stripe_webhook


def create_dev_app() -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The streaming service (NATS bridge, fan-out) lives as long as the app.
        async with stream.stream_lifespan(app):
            yield

    app = FastAPI(title="meterbridge (local stack)", version="1", lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(usage.router)
    app.include_router(admin.router)
    app.include_router(admin_deadletters.router)
    app.include_router(stream.router)
    app.include_router(health.router)

    @app.post("/stripe/webhook", include_in_schema=False)
    async def stripe_webhook_route(request: Request) -> JSONResponse:
        body = await request.body()
        # handle() does blocking DynamoDB calls and may wait for an in-flight duplicate.
        status, payload = await asyncio.to_thread(stripe_webhook.handle, body, dict(request.headers))
        return JSONResponse(payload, status_code=status)

    return app
