"""A slow client is dropped with a reason; a fast one is not held up by it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import nats
import pytest

from meterbridge_dev.stack.servers import BackgroundServer
from meterbridge_streaming.metrics import REGISTRY
from tests.support.builders import make_tenant
from tests.support.streams import (
    SSEReader,
    auth,
    js_publish,
    usage_event,
    wait_until,
)


@pytest.fixture
async def small_queue_app(
    aws: dict[str, str], nats_server: Any, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[dict[str, Any]]:
    from meterbridge.settings import get_settings
    from meterbridge_streaming.service import create_app

    monkeypatch.setenv("SSE_QUEUE_SIZE", "8")
    get_settings.cache_clear()
    app = create_app()
    with BackgroundServer(app) as server:
        service = app.state.stream_service
        await wait_until(lambda: service.bridge.connected)
        nc = await nats.connect(nats_server.url)
        yield {"url": server.url, "service": service, "js": nc.jetstream()}
        await nc.close()


def _stalled_stream(url: str, key: str) -> socket.socket:
    """A client that sends its request, then never reads (tiny receive buffer)."""
    parts = urlsplit(url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect((parts.hostname, parts.port))
    sock.sendall(
        f"GET /v1/stream HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Authorization: Bearer {key}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    return sock


def _dropped(reason: str) -> float:
    return (
        REGISTRY.get_sample_value("meterbridge_sse_clients_dropped_total", {"reason": reason})
        or 0.0
    )


async def test_slow_client_is_dropped_and_fast_client_gets_everything(
    small_queue_app: dict[str, Any],
) -> None:
    # Given a fast client and a stalled one of the same tenant (queues of 8 frames)
    tenant, key = make_tenant()
    url, js, service = small_queue_app["url"], small_queue_app["js"], small_queue_app["service"]
    dropped_before = _dropped("slow_consumer")
    slow = _stalled_stream(url, key)
    try:
        async with (
            httpx.AsyncClient(timeout=60) as http,
            SSEReader(http, f"{url}/v1/stream", auth(key)) as fast,
        ):
            await wait_until(lambda: service.hub.client_count == 2)

            # When many large events are published (far more than the stalled socket holds)
            blob = "x" * 60_000
            events = [
                usage_event(tenant, n).model_copy(update={"data": {"n": n, "pad": blob}})
                for n in range(120)
            ]
            reading = asyncio.create_task(fast.take(len(events)))
            for event in events:
                await js_publish(js, tenant, event)
            received = await reading

            # Then the fast client got every event in order while the slow one read nothing
            assert [e.json["id"] for e in received] == [e.id for e in events]
            await wait_until(lambda: service.hub.client_count == 1)
            assert _dropped("slow_consumer") == dropped_before + 1

            # ... and the slow one, once it reads, finds a stream that ended (its socket was
            # cut) after a gap-free prefix, so resuming from its last id loses nothing
            slow.setblocking(False)
            loop = asyncio.get_running_loop()
            raw = b""
            while chunk := await asyncio.wait_for(loop.sock_recv(slow, 1 << 20), 30):
                raw += chunk
            frames = [f for f in raw.split(b"\n\n")[:-1] if b"\nid: " in b"\n" + f]
            ids = [int(f.split(b"id: ", 1)[1].split(b"\n", 1)[0]) for f in frames]
            assert ids == list(range(ids[0], ids[0] + len(ids)))
            resume = {**auth(key), "Last-Event-ID": str(ids[-1])}
            async with SSEReader(http, f"{url}/v1/stream", resume) as again:
                rest = await again.take(len(events) - len(ids))
            assert [e.id for e in rest] == [str(i) for i in range(ids[-1] + 1, ids[0] + 120)]
    finally:
        slow.close()
