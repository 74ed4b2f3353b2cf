"""Helpers for the flush tests (no tests here): outbox filling, the sink, a fast client."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from meterbridge.adapters.openmeter import OpenMeterClient, RetryPolicy, reset_client
from meterbridge.dal import dynamo
from meterbridge.dal.outbox import outbox_item, stream
from meterbridge.dal.outbox.segments import legacy_item, segment_for
from meterbridge.logic import flush
from meterbridge.models.cloudevent import CloudEvent, usage_source
from meterbridge.models.flush import FlushConfig, FlushResult
from meterbridge.resilience import CircuitBreaker
from meterbridge_dev.fakes.openmeter_sink import SinkState, create_app
from meterbridge_dev.stack.servers import BackgroundServer

API_KEY = "om_test_flush_key"


def make_events(n: int, tenant: str = "t1", prefix: str = "ev") -> list[CloudEvent]:
    return [
        CloudEvent(
            id=f"{prefix}-{i:06d}",
            source=usage_source(tenant),
            type="api.request",
            subject=f"customer-{i % 7}",
            time="2026-11-20T10:00:00.000Z",
            data={"tokens": i % 13 + 1},
        )
        for i in range(n)
    ]


def fill_outbox(
    table: str,
    events: list[CloudEvent],
    tenant: str = "t1",
    *,
    segment_size: int = 10,
    legacy: bool = False,
    **kw: Any,
) -> list[str]:
    """Accept ``events`` into the outbox directly (BatchWriteItem, 25 a request, in parallel).

    By default as ingest does: their records, each an INSERT in the table's stream; returns
    the records' keys. ``legacy``: as the code before issue 16 did, their records and segments
    of ``segment_size`` events with ids derived from the first event; returns the segments'
    keys, in order."""
    if not legacy:
        records = [outbox_item(e, tenant_id=tenant, kind="usage", **kw) for e in events]
        _batch_put(table, records)
        return [r["pk"] for r in records]
    records = [legacy_item(e, tenant_id=tenant, kind="usage", **kw) for e in events]
    tag = events[0].id if events else "none"
    items: list[dict[str, Any]] = []
    segments: list[str] = []
    for n, start in enumerate(range(0, len(records), segment_size)):
        linked, segment = segment_for(
            records[start : start + segment_size], segment_id=f"fill-{tag}-{n:05d}"
        )
        items.extend(linked)
        items.append(segment)
        segments.append(segment["pk"])
    _batch_put(table, items)
    return segments


def _batch_put(table: str, items: list[dict[str, Any]]) -> None:
    wire = [dynamo.serialize(i) for i in items]
    chunks = [wire[i : i + 25] for i in range(0, len(wire), 25)]

    def write(chunk: list[dict[str, Any]]) -> None:
        request = {table: [{"PutRequest": {"Item": item}} for item in chunk]}
        while request:
            resp = dynamo.client().batch_write_item(RequestItems=request)
            request = resp.get("UnprocessedItems") or {}

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, chunks))


# A request to the loopback sink can take seconds on a loaded machine; a client timeout there
# would re-send a stored batch that no fault lost. Hangs (HANG_S) outlast a fault test's
# shorter timeout many times over.
CLIENT_TIMEOUT_S = 30.0
HANG_S = 15.0


def fast_client(url: str, **kw: Any) -> OpenMeterClient:
    """Short backoffs so fault tests stay bounded; a timeout sized for a loaded machine."""
    return OpenMeterClient(
        url,
        API_KEY,
        timeout_s=kw.pop("timeout_s", CLIENT_TIMEOUT_S),
        retry=kw.pop("retry", RetryPolicy(max_attempts=6, backoff_base_s=0.01, backoff_cap_s=0.1)),
        breaker=kw.pop(
            "breaker", CircuitBreaker("openmeter-test", failure_threshold=8, reset_timeout_s=0.2)
        ),
        **kw,
    )


def fast_config(**kw: Any) -> FlushConfig:
    defaults: dict[str, Any] = {"batch_size": 50, "lease_s": 30.0, "send_budget_s": 10.0}
    return FlushConfig(**{**defaults, **kw})


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[SinkState, str]]:
    """The OpenMeter fake on loopback, and the env pointing the flush at it."""
    from tests.support.fixtures import reset_singletons

    state = SinkState(API_KEY, seed=11, retry_after=1, hang_seconds=HANG_S)
    with BackgroundServer(create_app(state)) as server:
        monkeypatch.setenv("OPENMETER_ENABLED", "true")
        monkeypatch.setenv("OPENMETER_BASE_URL", server.url)
        monkeypatch.setenv("OPENMETER_API_KEY", API_KEY)
        reset_singletons()
        reset_client()
        yield state, server.url
    reset_client()


def run_flush(url: str, timeout_s: float = CLIENT_TIMEOUT_S, **kw: Any) -> FlushResult:
    client = kw.pop("client", None) or fast_client(url, timeout_s=timeout_s)
    config = kw.pop("config", None) or fast_config()
    return flush.flush_outbox(kw.pop("remaining_ms", None), config=config, client=client, **kw)


def drain(url: str, max_runs: int = 30, **kw: Any) -> list[FlushResult]:
    results = []
    for _ in range(max_runs):
        results.append(run_flush(url, **kw))
        if results[-1].remaining == 0:
            break
    return results


def trim_stream_before(
    moto_url: str, events_table: str, keys: set[tuple[str, str]], *, parent_shard: str = ""
) -> None:
    """DynamoDB's 24-hour trim, on the moto server: the stream drops every record before the
    first INSERT of one of ``keys``, and an iterator into the dropped part is refused with
    ``TrimmedDataAccessException``. ``parent_shard``: the shard then names that parent, gone
    from the stream (a split whose parent was trimmed)."""
    arn = stream.stream_arn(events_table)
    assert arn is not None
    pks = {f"{source}#{event_id}" for source, event_id in keys}
    first: int | None = None
    for shard in stream.shards(arn):
        it = stream.iterator(arn, shard.shard_id, None)
        while it is not None and first is None:
            records, it = stream.read(it)
            if not records:
                break
            hits = [r for r in records for q in stream.queued(r) if q.pk in pks]
            if hits:
                first = int(stream.sequence(hits[0]))
    assert first is not None
    answer = httpx.post(
        f"{moto_url}/_meterbridge/streams/trim",
        json={"table": events_table, "before_sequence": str(first), "parent_shard": parent_shard},
        timeout=30,
    )
    answer.raise_for_status()
