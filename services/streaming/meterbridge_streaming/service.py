"""The streaming routes, the service lifecycle and ``create_app()`` for uvicorn on ECS.

- ``GET /v1/stream``: SSE of the caller's tenant; ``Authorization: Bearer <tenant key>`` or
  ``?token=<stream token>``; resumes after ``Last-Event-ID`` (or ``?last_event_id=``).
- ``POST /v1/stream-tokens``: tenant key in, a short-lived stream token out.

Streams end when their authority does: a ``tenant.suspended`` or ``tenant.offboarded`` event
on the bridge closes the tenant's streams at once, and the key behind every open stream (its
bearer key, or the key a stream token was issued for) is re-read every key-cache TTL, so a
revoked or expired key's streams close within that TTL. The client gets a final ``closed``
event (``{"reason", "reconnect": false}``). Each tenant has at most its plan's ``max_streams``
open streams on a task (429 beyond), and connects and token requests take from the tenant's
in-process rate bucket (logic/rate.py; per task: this service writes nothing to DynamoDB).

Graceful shutdown (SIGTERM from ECS): new streams are refused, every client gets a final
``shutdown`` event (with a short ``retry``) and its response ends, then uvicorn finishes
and the lifespan drains NATS; the whole sequence stays well inside the 30 s stop timeout.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from meterbridge.api.admin_auth import bearer_token, require_admin
from meterbridge.api.errors import error_responses, install_error_handlers
from meterbridge.errors import MeterbridgeError, TenantSuspended, Unauthorized, to_http
from meterbridge.logic import rate
from meterbridge.logic.auth import (
    MAX_CACHE_TTL_S,
    authenticate,
    cached,
    principal_for_key,
)
from meterbridge.models.principal import TenantPrincipal
from meterbridge.observability import bind_tenant, logger
from meterbridge.plans import Plan, catalog
from meterbridge.settings import Settings, get_settings
from meterbridge_streaming import health as health_checks
from meterbridge_streaming import tokens
from meterbridge_streaming.bridge import NatsBridge, metering_consumer
from meterbridge_streaming.fanout import (
    HEARTBEAT_FRAME,
    FanoutHub,
    SSEClient,
    StreamEvent,
    control_frame,
    encode_frame,
    format_id,
    parse_id,
)
from meterbridge_streaming.metrics import SSE_EVENTS_DELIVERED, SSE_REPLAYS, STREAM_DELIVERY_LATENCY

# After a shutdown event, clients wait about this long before reconnecting (another task).
SHUTDOWN_RETRY_MS = 1000
# Retry-After of a connect over the tenant's open-stream cap.
STREAM_CAP_RETRY_S = 10
# Lifecycle events that close every stream of their tenant, and the reason given.
CLOSING_EVENTS = {"tenant.suspended": "tenant_suspended", "tenant.offboarded": "tenant_offboarded"}
# Reasons a stream is closed for good: the client must not reconnect with the same credentials.
REVOKED_REASONS = frozenset({"key_revoked", *CLOSING_EVENTS.values()})


class ShuttingDown(MeterbridgeError):
    status, code = 503, "shutting_down"


class StreamUnavailable(MeterbridgeError):
    status, code = 503, "stream_unavailable"


class TooManyStreams(MeterbridgeError):
    status, code = 429, "too_many_streams"


class StreamTokenOut(BaseModel):
    token: str
    expires_at: datetime
    expires_in: int


class StreamService:
    """The bridge, the fan-out hub and their wiring: one per process."""

    def __init__(self, settings: Settings | None = None, bridge: NatsBridge | None = None):
        self.settings = settings or get_settings()
        self.bridge = bridge or NatsBridge(self.settings)
        self.hub = FanoutHub(
            queue_size=self.settings.sse_queue_size,
            replay_buffer=self.settings.sse_replay_buffer,
            heartbeat_s=self.settings.sse_heartbeat_s,
        )
        self.bridge.add_consumer(self.hub.dispatch)
        self.bridge.add_consumer(metering_consumer)
        # After the hub: a closing event is delivered to the tenant's streams, then closes them.
        self.bridge.add_consumer(self._on_lifecycle)
        self.bridge.on_first_position(self.hub.set_floor)
        self.bridge.on_stream_reset(self.hub.reset)
        self.draining = False
        self.token_key = tokens.signing_key(self.settings.stream_token_secret)
        self._recheck_task: asyncio.Task[None] | None = None

    @property
    def recheck_interval_s(self) -> float:
        """How often the keys behind open streams are re-read: the key-cache TTL (1 s min)."""
        return max(1.0, min(self.settings.key_cache_ttl_s, MAX_CACHE_TTL_S))

    async def start(self) -> None:
        await self.bridge.start()
        self.hub.start_heartbeats()
        self._recheck_task = asyncio.create_task(self._recheck_loop(), name="stream-key-recheck")
        health_checks.register_check("stream_bridge", self.bridge.health)

    def _on_lifecycle(self, event: StreamEvent) -> None:
        reason = CLOSING_EVENTS.get(event.event_type) if event.kind == "tenant" else None
        if reason is not None:
            closed = self.hub.close_tenant(event.tenant_id, reason)
            logger.info(
                "tenant streams closed",
                extra={"tenant_id": event.tenant_id, "reason": reason, "clients": closed},
            )

    async def _recheck_loop(self) -> None:
        while True:
            await asyncio.sleep(self.recheck_interval_s)
            try:
                await self.recheck_keys()
            except Exception as exc:  # noqa: BLE001 - DynamoDB unreachable: try next round
                logger.warning("stream key re-check failed", extra={"error": type(exc).__name__})

    async def recheck_keys(self) -> int:
        """Re-read the key behind every open stream; close those of revoked or expired keys
        and suspended or deleted tenants. The number of streams closed."""
        open_keys = self.hub.open_keys()
        if not open_keys:
            return 0
        verdicts = await asyncio.to_thread(_key_verdicts, open_keys, self.settings)
        closed = 0
        for (tenant_id, key_id), reason in verdicts.items():
            count = self.hub.close_tenant(tenant_id, reason, key_id=key_id)
            if count:
                logger.info(
                    "streams of a key closed",
                    extra={"tenant_id": tenant_id, "reason": reason, "clients": count},
                )
            closed += count
        return closed

    def begin_shutdown(self) -> None:
        """Refuse new streams and end every open one with a ``shutdown`` event."""
        if not self.draining:
            self.draining = True
            logger.info(
                "stream shutdown: closing clients", extra={"clients": self.hub.client_count}
            )
            self.hub.close_all("shutdown")

    async def stop(self) -> None:
        self.begin_shutdown()
        task, self._recheck_task = self._recheck_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self.hub.stop_heartbeats()
        await self.bridge.drain()
        health_checks.unregister_check("stream_bridge")


def _key_verdicts(
    open_keys: set[tuple[str, str]], settings: Settings
) -> dict[tuple[str, str], str]:
    """Why each (tenant, key) may no longer stream; keys still good are left out."""
    verdicts: dict[tuple[str, str], str] = {}
    for tenant_id, key_id in open_keys:
        try:
            principal_for_key(key_id, tenant_id, settings, fresh=True)
        except TenantSuspended:
            verdicts[(tenant_id, key_id)] = "tenant_suspended"
        except Unauthorized:
            verdicts[(tenant_id, key_id)] = "key_revoked"
    return verdicts


# -- lifecycle ----------------------------------------------------------------------------
def _chain_sigterm(service: StreamService) -> Any:
    """Run ``begin_shutdown`` on SIGTERM before uvicorn's own handler.

    uvicorn waits for open responses before the lifespan shutdown runs, and SSE responses
    never end by themselves: they must be told first. Returns the previous handler.
    """
    if threading.current_thread() is not threading.main_thread():
        return None  # signals belong to the main thread (servers run in threads in tests)
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)

    def _on_sigterm(signum: int, frame: Any) -> None:
        loop.call_soon_threadsafe(service.begin_shutdown)
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, _on_sigterm)
    return previous


@asynccontextmanager
async def stream_lifespan(app: FastAPI) -> AsyncIterator[StreamService]:
    """Start the service for ``app`` (``app.state.stream_service``); drain it on exit.

    The lead's dev app enters this inside its own lifespan to serve ``router``.
    """
    service = StreamService()
    await service.start()
    app.state.stream_service = service
    previous = _chain_sigterm(service)
    try:
        yield service
    finally:
        await service.stop()
        if previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)


def _service(request: Request) -> StreamService:
    service = getattr(request.app.state, "stream_service", None)
    if service is None:
        raise StreamUnavailable("the streaming service is not started (stream_lifespan)")
    if service.draining:
        raise ShuttingDown("this task is shutting down; reconnect", headers={"Retry-After": "1"})
    return service


# -- auth ---------------------------------------------------------------------------------
async def _by_key(raw_key: str | None, settings: Settings) -> TenantPrincipal:
    """``authenticate``, on a thread only when the answer is not cached (a DynamoDB read)."""
    principal = cached(raw_key, settings)
    if principal is None:
        principal = await asyncio.to_thread(authenticate, raw_key, settings)
    return principal


async def _authenticated(
    request: Request, service: StreamService, token: str | None
) -> TenantPrincipal:
    """The tenant key's principal, or that of the key a stream token was issued for (re-read
    at most every key-cache TTL: a revoked key's tokens stop working within it)."""
    settings = service.settings
    raw_key = bearer_token(request)
    if raw_key is not None:
        principal = await _by_key(raw_key, settings)
    elif token:
        claims = tokens.verify(token, key=service.token_key)
        principal = await asyncio.to_thread(
            principal_for_key, claims.key_id, claims.tenant_id, settings
        )
    else:
        raise Unauthorized("Authorization: Bearer <key> or ?token=<stream token> is required")
    bind_tenant(principal.tenant_id)
    request.state.tenant_id = principal.tenant_id
    return principal


def _over_cap(plan: Plan) -> TooManyStreams:
    return TooManyStreams(
        f"the {plan.name} plan allows {plan.max_streams} open streams per tenant; "
        "close one or retry later",
        details={"max_streams": plan.max_streams},
        headers={"Retry-After": str(STREAM_CAP_RETRY_S)},
    )


# -- the SSE response ---------------------------------------------------------------------
class SSEResponse(Response):
    """A Server-Sent Events response fed by the hub (not StreamingResponse: no task group
    per client, batched writes, and a replay phase before the live phase)."""

    media_type = "text/event-stream"

    def __init__(
        self,
        service: StreamService,
        tenant_id: str,
        last_event_id: str | None,
        *,
        key_id: str | None = None,
        plan: Plan | None = None,
    ):
        """``key_id``: the key re-checked while the stream is open; ``plan``: its cap."""
        super().__init__(content=None, media_type=self.media_type)
        self.service = service
        self.tenant_id = tenant_id
        self.key_id = key_id
        self.last_event_id = last_event_id
        self.plan = plan

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        service, hub = self.service, self.service.hub
        plan = self.plan
        if plan is not None and hub.tenant_client_count(self.tenant_id) >= plan.max_streams:
            # Checked here, with no await before the registration, not in the route:
            # concurrent connects cannot both take the last place.
            status, body, headers = to_http(_over_cap(plan))
            await JSONResponse(body, status_code=status, headers=headers)(scope, receive, send)
            return
        # Registration and the hand-off position are taken together, between two dispatches.
        client = hub.register(self.tenant_id, service.bridge.position, self.key_id)
        client.task = asyncio.current_task()
        watcher = asyncio.create_task(_watch_disconnect(receive, client))
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream; charset=utf-8"),
                        (b"cache-control", b"no-cache, no-transform"),
                        (b"x-accel-buffering", b"no"),
                    ],
                }
            )
            prelude = b"retry: %d\n: connected\n\n" % service.settings.sse_retry_ms
            await _body(send, prelude)
            if self.last_event_id is not None:
                await self._replay(send, client)
            await self._live(send, client)
        except asyncio.CancelledError:
            # Cancelled by the stalled-write guard: return without completing the response,
            # uvicorn then closes the socket. Any other cancellation propagates.
            task = asyncio.current_task()
            if client.closed != "slow_consumer" or task is None:
                raise
            task.uncancel()
        finally:
            watcher.cancel()
            hub.unregister(client)
            stalled = client.take_stalled()
            if stalled is not None:
                stalled[2].close()

    async def _live(self, send: Any, client: SSEClient) -> None:
        """Catch up on what queued, then let the hub write directly until the socket fills
        (a stalled write: finish it here and catch up again) or the client closes."""

        def start_write(data: bytes) -> Any:
            return send({"type": "http.response.body", "body": data, "more_body": True})

        while True:
            stalled = client.take_stalled()
            if stalled is not None:
                stored_at, frame, rest = stalled
                await rest
                _count_written([(stored_at, frame)])
            batch = client.take_queued()
            if batch:
                await _body(send, b"".join(frame for _, frame in batch))
                _count_written(batch)
                continue
            if client.closed is not None:
                break
            client.go_direct(start_write)
            await client.wait()
        if client.error is not None:
            raise client.error
        final = _final_frame(client.closed)
        if final is not None:
            await _body(send, final)
        # Completes the response (a no-op on a connection the client already closed).
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _replay(self, send: Any, client: SSEClient) -> None:
        """Everything of the tenant after ``Last-Event-ID`` up to the hand-off, then live."""
        service, hub, bridge = self.service, self.service.hub, self.service.bridge
        after = parse_id(self.last_event_id)
        handoff = client.handoff
        if after is None:
            SSE_REPLAYS.labels("reset").inc()
            await _body(send, _reset_frame("invalid_id", self.last_event_id, None))
            return
        if after >= handoff:
            # Up to date, or ahead of this task (another task served it): skip what it has.
            client.skip_until = after
            if bridge.connected and after[0] > 0:
                _, last_seq = await bridge.stream_bounds()
                if after[0] > max(last_seq, handoff[0]):
                    client.skip_until = (-1, 0)
                    SSE_REPLAYS.labels("reset").inc()
                    await _body(send, _reset_frame("unknown_id", self.last_event_id, None))
            return
        buffered = hub.buffered_after(self.tenant_id, after, handoff)
        if buffered is not None:
            SSE_REPLAYS.labels("buffer").inc()
            if buffered:
                await _body(send, b"".join(frame for _, frame in buffered))
            return
        # Older than this task's buffer: read JetStream (wait for it while NATS is down).
        while not await bridge.wait_connected(timeout=service.settings.sse_heartbeat_s):
            if client.closed is not None:
                return
            await _body(send, HEARTBEAT_FRAME)
        SSE_REPLAYS.labels("jetstream").inc()
        first_seq, last_seq = await bridge.stream_bounds()
        if after[0] > max(last_seq, handoff[0]):
            await _body(send, _reset_frame("unknown_id", self.last_event_id, None))
            return
        if after[0] + 1 < first_seq:
            # Older than retention: say so, then send everything still retained.
            await _body(send, _reset_frame("expired", self.last_event_id, first_seq))
            after = (first_seq - 1, 0)
        try:
            chunk: list[bytes] = []
            async for event in bridge.replay(self.tenant_id, after, handoff[0]):
                chunk.append(encode_frame(event))
                if len(chunk) >= 256:
                    await _body(send, b"".join(chunk))
                    chunk = []
                if client.closed is not None:
                    return
            if chunk:
                await _body(send, b"".join(chunk))
        except Exception as exc:  # noqa: BLE001 - NATS lost mid-replay: the client resumes
            logger.warning("replay failed", extra={"error": type(exc).__name__})
            client.close("replay_failed")
            return
        # Fallback events of the current outage, delivered before this client registered.
        tail = hub.buffered_after(self.tenant_id, (handoff[0], 0), handoff) or []
        if tail:
            await _body(send, b"".join(frame for _, frame in tail))


def _count_written(batch: list[tuple[float, bytes]]) -> None:
    """Metrics of frames a client's own task wrote (direct writes count in the hub)."""
    now = time.time()
    events = 0
    for stored_at, frame in batch:
        if frame is not HEARTBEAT_FRAME:
            events += 1
            STREAM_DELIVERY_LATENCY.observe(max(0.0, now - stored_at))
    if events:
        SSE_EVENTS_DELIVERED.inc(events)


async def _body(send: Any, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


async def _watch_disconnect(receive: Any, client: SSEClient) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            client.close("disconnected")
            return


def _final_frame(reason: str | None) -> bytes | None:
    if reason == "shutdown":
        return control_frame(
            "shutdown", {"reason": "shutdown", "reconnect": True}, retry_ms=SHUTDOWN_RETRY_MS
        )
    if reason in ("slow_consumer", "replay_failed"):
        return control_frame("dropped", {"reason": reason, "reconnect": True})
    if reason in REVOKED_REASONS:
        return control_frame("closed", {"reason": reason, "reconnect": False})
    return None


def _reset_frame(reason: str, last_event_id: str | None, first_available: int | None) -> bytes:
    data: dict[str, Any] = {"reason": reason, "last_event_id": last_event_id}
    if first_available is not None:
        data["first_available_id"] = str(first_available)
    return control_frame("reset", data)


# -- routes -------------------------------------------------------------------------------
router = APIRouter(prefix="/v1", tags=["streaming"])


@router.get(
    "/stream",
    response_class=Response,
    responses={
        200: {"content": {"text/event-stream": {}}},
        **error_responses(401, 403, 429, 503),
    },
)
async def stream(
    request: Request,
    token: str | None = Query(None, description="A stream token (for EventSource)"),
    last_event_id: str | None = Query(None, description="Resume point when headers can't"),
) -> Response:
    """The caller's tenant's usage and billing events as Server-Sent Events.

    429 ``too_many_streams`` beyond the plan's ``max_streams`` open streams, 429
    ``rate_limited`` beyond its request rate; a stream ends with a ``closed`` event when its
    key is revoked or its tenant suspended or offboarded.
    """
    service = _service(request)
    principal = await _authenticated(request, service, token)
    plan = catalog().plan(principal.plan)
    rate.take_local(principal.tenant_id, plan)
    resume = request.headers.get("last-event-id") or last_event_id
    return SSEResponse(service, principal.tenant_id, resume, key_id=principal.key_id, plan=plan)


@router.post(
    "/stream-tokens", response_model=StreamTokenOut, responses=error_responses(401, 403, 429)
)
async def create_stream_token(request: Request) -> StreamTokenOut:
    """A short-lived token for ``GET /v1/stream?token=...`` (the key never goes in a URL)."""
    service = _service(request)
    raw_key = bearer_token(request)
    principal = await _by_key(raw_key, service.settings)
    bind_tenant(principal.tenant_id)
    rate.take_local(principal.tenant_id, catalog().plan(principal.plan))
    issued = tokens.issue(
        principal.tenant_id,
        principal.key_id,
        key=service.token_key,
        ttl_s=service.settings.stream_token_ttl_s,
    )
    return StreamTokenOut(
        token=issued.token,
        expires_at=datetime.fromtimestamp(issued.expires_at, UTC),
        expires_in=service.settings.stream_token_ttl_s,
    )


def create_app() -> FastAPI:
    """The streaming service on its own (ECS): the routes, health and metrics."""
    from meterbridge.api.usage import get_usage
    from meterbridge.models.usage import UsageReport
    from meterbridge_streaming import health_routes
    from meterbridge_streaming.dashboard.routes import include_dashboard

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with stream_lifespan(app):
            yield

    # Internet-facing behind the load balancer: no schema or docs pages to map the service
    # (docs/openapi.json is the published contract), and the task's status for operators only.
    app = FastAPI(
        title="meterbridge streaming",
        version="1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(health_routes.router)

    # The dashboard (served at /) reads the tenant's usage from this same origin.
    app.add_api_route(
        "/v1/usage", get_usage, methods=["GET"], response_model=UsageReport, tags=["usage"]
    )
    include_dashboard(app)

    # The admin token (METERBRIDGE_ADMIN_TOKEN); without one configured, always 401.
    @app.get("/status", include_in_schema=False, dependencies=[Depends(require_admin)])
    async def status() -> JSONResponse:
        service = getattr(app.state, "stream_service", None)
        clients = service.hub.client_count if service else 0
        position = format_id(service.bridge.position) if service else None
        return JSONResponse({"service": "streaming", "clients": clients, "position": position})

    return app


__all__ = ["SSEResponse", "StreamService", "create_app", "router", "stream_lifespan"]
