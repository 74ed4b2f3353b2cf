"""Helpers of the streaming tests: an SSE reader over httpx, a JetStream publisher, waits.

(Named ``test_stream_*`` to sit with the tests it serves; it holds no test itself.)
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import nats
import pytest

from meterbridge.bus.subjects import tenant_subject
from meterbridge.models.cloudevent import CloudEvent, usage_source
from meterbridge_dev.stack.servers import BackgroundServer


@dataclass
class SSEEvent:
    id: str | None
    event: str
    data: str

    @property
    def json(self) -> Any:
        return json.loads(self.data)


class SSEReader:
    """One streaming GET; ``next_event`` parses the SSE wire format (comments skipped)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> None:
        self._client = client
        self._url = url
        self._headers = headers or {}
        self._params = params or {}
        self.response: httpx.Response | None = None
        self.retry: int | None = None
        self.comments = 0
        self._cm: Any = None
        self._lines: Any = None

    async def __aenter__(self) -> SSEReader:
        self._cm = self._client.stream("GET", self._url, headers=self._headers, params=self._params)
        self.response = await self._cm.__aenter__()
        self._lines = self.response.aiter_lines()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._cm.__aexit__(*exc)

    async def next_event(self, timeout: float = 60.0) -> SSEEvent | None:
        """The next event, or None when the server ended the response."""
        return await asyncio.wait_for(self._next(), timeout)

    async def _next(self) -> SSEEvent | None:
        fields: dict[str, list[str]] = {}
        async for line in self._lines:
            if line == "":
                if "data" in fields or "event" in fields:
                    return SSEEvent(
                        id=fields.get("id", [None])[-1],
                        event=fields.get("event", ["message"])[-1],
                        data="\n".join(fields.get("data", [])),
                    )
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "retry":
                self.retry = int(value)
            else:
                fields.setdefault(name, []).append(value)
        return None

    async def take(self, count: int, timeout: float = 60.0) -> list[SSEEvent]:
        out: list[SSEEvent] = []
        while len(out) < count:
            event = await self.next_event(timeout)
            if event is None:
                break
            out.append(event)
        return out


def usage_event(tenant_id: str, n: int, run: str | None = None) -> CloudEvent:
    return CloudEvent(
        id=f"evt-{run or uuid.uuid4().hex[:6]}-{n}",
        source=usage_source(tenant_id),
        type="api.request",
        subject="customer-1",
        data={"n": n, "tokens": 10},
    )


def msg_id(event: CloudEvent) -> str:
    return f"{event.source}#{event.id}"


async def js_publish(js: Any, tenant_id: str, event: CloudEvent, kind: str = "usage") -> int:
    """Publish as the Lambdas do (JSON CloudEvent, Nats-Msg-Id); the stream sequence back."""
    ack = await js.publish(
        tenant_subject(tenant_id, kind),
        json.dumps(event.wire(), separators=(",", ":")).encode(),
        headers={"Nats-Msg-Id": msg_id(event)},
    )
    return int(ack.seq)


async def wait_until(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.02)


def auth(raw_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw_key}"}


@pytest.fixture(name="stream_app")
async def stream_app_fixture(
    aws: dict[str, str], nats_server: Any
) -> AsyncIterator[dict[str, Any]]:
    """The streaming app on a real uvicorn (thread), connected to the test's nats-server."""
    from meterbridge_streaming.service import create_app

    app = create_app()
    with BackgroundServer(app) as server:
        service = app.state.stream_service
        await wait_until(lambda: service.bridge.connected)
        nc = await nats.connect(nats_server.url)
        try:
            yield {"url": server.url, "service": service, "js": nc.jetstream(), "nats": nats_server}
        finally:
            await nc.close()


async def on_server_loop(service: Any, coro: Awaitable[Any]) -> Any:
    """Run ``coro`` on the server's event loop (where the bridge lives) and await it here."""
    future = asyncio.run_coroutine_threadsafe(coro, service.bridge.loop)  # type: ignore[arg-type]
    return await asyncio.wrap_future(future)
