"""ASGI metering middleware: one event per HTTP request.

    app.add_middleware(MeteringMiddleware, client=client)

    @app.post("/v1/chat/{model}")
    async def chat(request: Request, model: str):
        request.state.meter.add(tokens=1234, model=model)

Each request records one event (type ``api.call`` by default) with ``data``: ``route`` (the
matched route's path template, e.g. ``/v1/chat/{model}``, never the raw path, so ids and
user data in URLs never reach billing; ``null`` when no route matched), ``method``,
``status``, ``duration_ms``, and whatever the handler added through ``request.state.meter``.
The middleware also drains the client at the ASGI lifespan's shutdown.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from meterbridge_client._async import AsyncClient
from meterbridge_client._sync import Client

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Meter:
    """``request.state.meter``: values to add to this request's event.

    ``add(tokens=10)`` twice gives ``tokens=20`` (numbers add up); other values replace.
    Set ``subject`` to bill the request to one of your own customers, or ``skip = True`` to
    record nothing for it.
    """

    __slots__ = ("skip", "subject", "values")

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.subject: str | None = None
        self.skip = False

    def add(self, **values: Any) -> None:
        for key, value in values.items():
            old = self.values.get(key)
            if _number(value) and _number(old):
                self.values[key] = old + value
            else:
                self.values[key] = value


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def route_template(scope: Scope) -> str | None:
    """The matched route's path template, as Starlette and FastAPI record it in the scope."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else None


class MeteringMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        client: Client | AsyncClient,
        *,
        event_type: str = "api.call",
        subject: Callable[[Scope], str | None] | None = None,
        close_on_shutdown: bool = True,
    ) -> None:
        self.app = app
        self.client = client
        self.event_type = event_type
        self.subject = subject
        self.close_on_shutdown = close_on_shutdown

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        meter = Meter()
        scope.setdefault("state", {})["meter"] = meter
        status = 500
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            if not meter.skip:
                data = {
                    "route": route_template(scope),
                    "method": scope.get("method"),
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    **meter.values,
                }
                subject = meter.subject
                if subject is None and self.subject is not None:
                    subject = self.subject(scope)
                self.client.record(self.event_type, data, subject=subject)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_and_drain(message: Message) -> None:
            kind = message["type"]
            if kind == "lifespan.startup.complete" and isinstance(self.client, AsyncClient):
                self.client.start()
            if kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self._close()
            await send(message)

        await self.app(scope, receive, send_and_drain)

    async def _close(self) -> None:
        if not self.close_on_shutdown:
            return
        if isinstance(self.client, AsyncClient):
            await self.client.aclose()
        else:
            await asyncio.to_thread(self.client.close)
