"""The stream on a 3-node JetStream cluster with 3 replicas: a node dies mid-stream."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import nats
import pytest

from meterbridge.models.cloudevent import CloudEvent
from meterbridge_dev.stack.processes import NatsServer, nats_cluster
from meterbridge_dev.stack.servers import BackgroundServer
from tests.support.builders import make_tenant
from tests.support.streams import (
    SSEReader,
    auth,
    js_publish,
    usage_event,
    wait_until,
)


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[NatsServer]]:
    nodes = nats_cluster(3)
    try:
        for node in nodes:
            node.start()
        monkeypatch.setenv("NATS_ENABLED", "true")
        monkeypatch.setenv("NATS_SERVERS", ",".join(n.url for n in nodes))
        monkeypatch.setenv("NATS_STREAM_REPLICAS", "3")
        yield nodes
    finally:
        for node in nodes:
            node.cleanup()


async def _publish_until_acked(js: Any, tenant: str, event: CloudEvent) -> int:
    # A publisher retries with the same Nats-Msg-Id until acknowledged, as the outbox does;
    # during a leader election an attempt may fail or time out after being stored.
    for _ in range(200):
        try:
            return await js_publish(js, tenant, event)
        except Exception:
            await asyncio.sleep(0.1)
    raise AssertionError(f"{event.id} never acknowledged")


async def test_killing_one_node_mid_stream_loses_and_duplicates_nothing(
    aws: dict[str, str], cluster: list[NatsServer]
) -> None:
    # Given the streaming app on a 3-node cluster (stream with 3 replicas) and a client
    from meterbridge.settings import get_settings
    from meterbridge_streaming.service import create_app

    get_settings.cache_clear()
    tenant, key = make_tenant()
    app = create_app()
    with BackgroundServer(app) as server:
        service = app.state.stream_service
        await wait_until(lambda: service.bridge.connected, timeout=60)
        publisher = await nats.connect([n.url for n in cluster], max_reconnect_attempts=-1)
        js = publisher.jetstream(timeout=10)
        info = await js.stream_info("METERBRIDGE")
        events = [usage_event(tenant, n, "cluster") for n in range(60)]
        async with (
            httpx.AsyncClient(timeout=60) as http,
            SSEReader(http, f"{server.url}/v1/stream", auth(key)) as reader,
        ):
            await wait_until(lambda: service.hub.client_count == 1)
            reading = asyncio.create_task(reader.take(len(events), timeout=60))
            for event in events[:30]:
                await _publish_until_acked(js, tenant, event)

            # When the node the bridge is connected to is killed (-9) mid-stream
            victim = next(n for n in cluster if n.url == service.bridge.connected_url)
            victim.kill()
            for event in events[30:]:
                await _publish_until_acked(js, tenant, event)
            received = await reading
        await publisher.close()

    # Then the client got every event once, in stream order, from the replicated stream
    assert info.config.num_replicas == 3
    assert [e.json["id"] for e in received] == [e.id for e in events]
    ids = [int(e.id) for e in received if e.id is not None]
    assert ids == sorted(set(ids)) and len(ids) == len(events)
