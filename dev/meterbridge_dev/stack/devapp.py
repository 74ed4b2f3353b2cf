"""One FastAPI app serving every HTTP surface of meterbridge on one port, for local runs.

The routers are the same objects the Lambdas serve through Mangum; the Stripe webhook route
passes the raw body to the same logic the Function URL handler calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from meterbridge.api import admin, admin_billing, admin_deadletters, usage
from meterbridge.api.admission import TenantAdmission
from meterbridge.api.errors import install_error_handlers
from meterbridge.errors import MeterbridgeError
from meterbridge.logic.stripe import webhook as stripe_webhook
from meterbridge_dev.stack.sigv4 import AllowedCredential, SigV4Rejected, iam_context, verify
from meterbridge_streaming import health_routes
from meterbridge_streaming.dashboard.routes import include_dashboard
from meterbridge_streaming.limits import BodyLimit
from meterbridge_streaming.metrics import (
    API_REQUESTS,
    STRIPE_WEBHOOK_LATENCY,
    STRIPE_WEBHOOKS_RECEIVED,
)
from meterbridge_streaming.service import router as stream_router
from meterbridge_streaming.service import stream_lifespan


class _CountRequests(BaseHTTPMiddleware):
    """``meterbridge_api_requests_total`` by route template (not raw path) and status."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        if path != "/v1/stream":  # a stream's status is known at its start only
            API_REQUESTS.labels(route=path, status=str(response.status_code)).inc()
        return response


class SigV4Admin:
    """``--admin-auth iam``: verify SigV4 on ``/admin/*`` as API Gateway's IAM authorizer does.

    A verified request carries the caller's IAM identity in ``scope["aws.event"]``, where
    Mangum puts API Gateway's request context on AWS; anything else is a 403.
    """

    def __init__(self, app: ASGIApp, allowed: dict[str, AllowedCredential], region: str) -> None:
        self.app = app
        self.allowed = allowed
        self.region = region

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/admin"):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        body = b""
        while True:
            message = await receive()
            messages.append(message)
            body += message.get("body", b"")
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        query = scope.get("query_string", b"").decode("latin-1")
        path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        url = f"http://{headers.get('host', 'localhost')}{path}" + (f"?{query}" if query else "")
        try:
            credential = verify(
                method=scope["method"],
                url=url,
                headers=headers,
                body=body,
                allowed=self.allowed,
                region=self.region,
            )
        except SigV4Rejected as exc:
            await JSONResponse({"message": exc.message}, status_code=403)(scope, receive, send)
            return
        scope = {
            **scope,
            "aws.event": {"requestContext": {"authorizer": {"iam": iam_context(credential)}}},
        }
        pending = list(messages)

        async def replay() -> Message:
            if pending:
                return pending.pop(0)
            return await receive()

        await self.app(scope, replay, send)


class _LogRequests(BaseHTTPMiddleware):
    """One console line per request: method, path, status, time to the response head."""

    def __init__(self, app: ASGIApp, emit: Callable[[dict[str, Any], str], None]) -> None:
        super().__init__(app)
        self.emit = emit

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        from meterbridge_dev.stack.console import request_line

        start = time.perf_counter()
        response = await call_next(request)
        ms = (time.perf_counter() - start) * 1000
        path = request.url.path
        fields = {
            "kind": "request",
            "method": request.method,
            "path": path,
            "status": response.status_code,
            "duration_ms": round(ms, 1),
        }
        self.emit(fields, request_line(request.method, path, response.status_code, ms, None))
        return response


def create_dev_app(
    iam_credentials: dict[str, AllowedCredential] | None = None,
    region: str = "us-east-1",
    on_request: Callable[[dict[str, Any], str], None] | None = None,
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The streaming service (NATS bridge, fan-out) lives as long as the app.
        async with stream_lifespan(app):
            yield

    app = FastAPI(title="meterbridge (local stack)", version="1", lifespan=lifespan)
    install_error_handlers(app)
    app.add_middleware(_CountRequests)
    # A body over its route's cap is refused before any app code reads it ...
    app.add_middleware(BodyLimit)
    # ... and outside that, a tenant out of tokens before its body is read at all.
    app.add_middleware(TenantAdmission)
    app.include_router(usage.router)
    app.include_router(admin.router)
    app.include_router(admin_deadletters.router)
    app.include_router(admin_billing.router)
    app.include_router(stream_router)
    app.include_router(health_routes.router)
    include_dashboard(app)
    if iam_credentials is not None:
        app.add_middleware(SigV4Admin, allowed=iam_credentials, region=region)
    if on_request is not None:
        app.add_middleware(_LogRequests, emit=on_request)

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
