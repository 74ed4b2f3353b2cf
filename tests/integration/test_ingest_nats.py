"""Ingest with a real nats-server: accepted events reach the tenant's JetStream subject once
each and leave the ``republish`` index; with NATS down, ingest still answers 202 and the events
stay marked for the flush to republish."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import nats
import pytest

from meterbridge.bus.subjects import STREAM_NAME, tenant_subject
from meterbridge.dal import dynamo, outbox
from meterbridge_dev.stack.processes import NatsServer
from meterbridge_dev.stack.servers import BackgroundServer
from tests.support.builders import event_records, make_tenant


@pytest.fixture
def usage_url(aws: dict[str, str], nats_server: NatsServer) -> Iterator[str]:
    from meterbridge.api.usage import create_app

    with BackgroundServer(create_app()) as srv:
        yield srv.url


def _post(url: str, key: str, body: object) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/events", json=body, timeout=30, headers={"Authorization": f"Bearer {key}"}
    )


def _batch(n: int) -> list[dict[str, Any]]:
    return [{"id": f"evt-{i}", "type": "api.call", "data": {"n": i}} for i in range(n)]


def _items(table: str) -> list[dict[str, Any]]:
    return event_records(table)


def _in_republish_index(table: str) -> list[str]:
    """The pks the ``republish`` index holds, over all its shards."""
    pks: list[str] = []
    for shard in range(outbox.OUTBOX_SHARDS):
        items, _ = dynamo.query(
            table,
            index=outbox.REPUBLISH_INDEX,
            key_condition="republish_shard = :s",
            vals={":s": str(shard)},
        )
        pks += [i["pk"] for i in items]
    return pks


async def _stream_ids(url: str, subject: str) -> list[str]:
    """The event ids of every message the stream holds on ``subject``, in stream order."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=30)
        info = await js.stream_info(STREAM_NAME, subjects_filter=subject)
        count = int((info.state.subjects or {}).get(subject, 0))
        if count == 0:
            return []
        sub = await js.pull_subscribe(subject, stream=STREAM_NAME)
        ids: list[str] = []
        while len(ids) < count:
            for msg in await sub.fetch(count - len(ids), timeout=30):
                ids.append(json.loads(msg.data)["id"])
                await msg.ack()
        return ids
    finally:
        await nc.close()


def test_ingested_events_reach_the_tenant_subject_once_and_leave_the_index(
    usage_url: str, aws: dict[str, str], nats_server: NatsServer
) -> None:
    # Given a tenant and a batch of 120 events (more than one 100-item clearing transaction)
    tenant, key = make_tenant("basic")
    batch = _batch(120)

    # When it is posted, then posted again (a client retry)
    first = _post(usage_url, key, batch)
    retry = _post(usage_url, key, batch)

    # Then each event is on the tenant's usage subject exactly once
    assert first.status_code == 202 and first.json() == {"accepted": 120, "duplicates": 0}
    assert retry.json() == {"accepted": 0, "duplicates": 120}
    subject = tenant_subject(tenant, "usage")
    ids = asyncio.run(_stream_ids(nats_server.url, subject))
    assert sorted(ids) == sorted(e["id"] for e in batch)
    # ...and no stored event waits for a republish any more
    items = _items(aws["EventsTable"])
    assert len(items) == 120
    assert [i["pk"] for i in items if "republish_shard" in i] == []
    assert _in_republish_index(aws["EventsTable"]) == []


def test_with_nats_down_ingest_answers_202_and_keeps_the_republish_marks(
    usage_url: str, aws: dict[str, str], nats_server: NatsServer
) -> None:
    # Given a tenant, and the nats-server killed with -9
    _, key = make_tenant("basic")
    nats_server.kill()

    # When a batch is posted
    resp = _post(usage_url, key, _batch(5))

    # Then the request succeeds and every event stays marked for the flush to republish
    assert resp.status_code == 202 and resp.json() == {"accepted": 5, "duplicates": 0}
    items = _items(aws["EventsTable"])
    assert len(items) == 5
    assert all("republish_shard" in i for i in items)
    assert sorted(_in_republish_index(aws["EventsTable"])) == sorted(i["pk"] for i in items)


def test_events_published_before_nats_died_are_cleared_the_rest_stay_marked(
    usage_url: str, aws: dict[str, str], nats_server: NatsServer
) -> None:
    # Given a tenant whose first batch went out while NATS was up
    _, key = make_tenant("basic")
    assert _post(usage_url, key, _batch(3)).status_code == 202

    # When NATS is killed and a second batch arrives
    nats_server.kill()
    later = [{"id": f"late-{i}", "type": "api.call"} for i in range(4)]
    resp = _post(usage_url, key, later)

    # Then 202, and exactly the second batch waits in the republish index
    assert resp.status_code == 202 and resp.json()["accepted"] == 4
    marked = {
        i["pk"].rsplit("#", 1)[1] for i in _items(aws["EventsTable"]) if "republish_shard" in i
    }
    assert marked == {e["id"] for e in later}
