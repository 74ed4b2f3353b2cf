"""The OpenMeter flush against the OpenMeter fake and DynamoDB on a moto server (issue 5)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from meterbridge.dal import outbox
from meterbridge.dal.outbox import segments, shard_leases, stream
from meterbridge.models.flush import FlushResult
from meterbridge.settings import get_settings
from meterbridge_dev.fakes.openmeter_sink import Fault
from tests.support import flush as flush_support
from tests.support.builders import events_table_items, scan_items
from tests.support.flush import (
    HANG_S,
    drain,
    fast_config,
    fill_outbox,
    make_events,
    run_flush,
)

sink = flush_support.sink  # the OpenMeter fake fixture


def test_ten_thousand_events_with_ten_percent_duplicates_reach_openmeter_once_each(aws, sink):
    # Given: 10,000 submissions, 1,000 of them duplicates that the outbox's dedupe refuses
    state, url = sink
    table = aws["EventsTable"]
    unique = make_events(9000)
    fill_outbox(table, unique)
    refused = [outbox.enqueue(table, e, tenant_id="t1", kind="usage") for e in unique[::9][:1000]]

    # When
    results = drain(url, config=fast_config(batch_size=100, concurrency=8))

    # Then
    assert refused == [False] * 1000
    expected = {(e.source, e.id) for e in unique}
    assert state.unique_keys() == expected
    assert state.resent() == {}
    assert sum(r.sent for r in results) == 9000
    assert results[-1].remaining == 0
    records, segments = events_table_items(table)
    assert len(records) == 9000 and not segments
    assert not [i for i in records if "dead" in i or "republish_shard" in i]
    # Dedupe records outlive the 35-day late-event window (docs/flush.md)
    assert min(i["expires_at"] - int(time.time()) for i in records) >= 40 * 24 * 3600


def _wait_for_hangs_to_end(state: Any) -> None:
    """Until no hanging request is in flight (the sink logs a hang when it ends): the first,
    scripted hang has ended, then a whole hang's length passes with no request logged."""
    bound = time.monotonic() + 10 * HANG_S
    while "hang" not in state.stats()["faults_injected"]:
        assert time.monotonic() < bound, "the scripted hang never ended"
        time.sleep(0.2)
    seen, quiet_since = len(state.requests()), time.monotonic()
    while time.monotonic() - quiet_since < HANG_S + 1:
        assert time.monotonic() < bound, "the sink kept answering after the runs"
        time.sleep(0.2)
        if len(state.requests()) != seen:
            seen, quiet_since = len(state.requests()), time.monotonic()


def test_faults_and_a_poison_event_end_with_each_good_event_once_and_the_poison_dead(aws, sink):
    # Given: 30% 500s, some 429/503 with Retry-After, some hangs past the client timeout,
    # some stored-then-500 answers, and one event OpenMeter always rejects
    state, url = sink
    table = aws["EventsTable"]
    events = make_events(1000)
    fill_outbox(table, events)
    poison = events[417]
    state.poison(poison.id)
    state.script(Fault("hang", seconds=HANG_S), "throttle", "record_then_fail", "unavailable")
    state.set_probabilities(
        error=0.3, throttle=0.04, unavailable=0.03, hang=0.04, record_then_fail=0.03
    )

    # When
    # (a client timeout well below the hangs, well above a loaded machine's normal answer)
    results = drain(url, config=fast_config(batch_size=50, concurrency=4), timeout_s=5.0)
    _wait_for_hangs_to_end(state)

    # Then: every good event is in OpenMeter, the poison is dead-lettered, nothing pending
    good = {(e.source, e.id) for e in events if e.id != poison.id}
    assert state.unique_keys() == good
    assert results[-1].remaining == 0
    assert sum(r.sent for r in results) == len(good)
    assert sum(r.dead_lettered for r in results) == 1
    assert sum(r.retried for r in results) > 0
    stats = state.stats()
    assert {"error", "throttle", "hang"} <= set(stats["faults_injected"])
    # A re-send only ever follows an answer that lost a stored batch's acknowledgement
    ambiguous = {
        i
        for r in state.requests()
        if r["recorded"] and r["fault"] in ("hang", "record_then_fail")
        for i in r["ids"]
    }
    assert {event_id for (_, event_id) in state.resent()} <= ambiguous
    dead = outbox.get_event(table, outbox.event_pk(poison.source, poison.id))
    assert dead["status"] == "dead" and dead["dead"] == outbox.DEAD
    assert '"status": 400' in dead["error"]


class Killed(BaseException):
    """The Lambda dies: nothing after this point of the run executes."""


def test_a_run_killed_between_post_and_mark_leads_to_a_resend_of_the_same_ids(
    aws, sink, monkeypatch
):
    # Given: a run that dies right after OpenMeter acknowledged its first batch
    state, url = sink
    table = aws["EventsTable"]
    events = make_events(40)
    fill_outbox(table, events)

    def die(*args: Any, **kwargs: Any) -> bool:
        raise Killed()

    # (the checkpoint commit after OpenMeter's 2xx is the stream's "mark")
    monkeypatch.setattr(stream, "commit", die)
    with pytest.raises(Killed):
        run_flush(
            url, config=fast_config(batch_size=40, concurrency=1, lease_s=30.0, stream_page=10)
        )
    monkeypatch.undo()
    killed = set(state.counts())
    assert 0 < len(killed) < 40

    # When: a run while the dead run's leases are live, then one after they expired
    during_lease = run_flush(url)
    after_lease = run_flush(url, clock=lambda: time.time() + 31)

    # Then: the killed batch's ids (and only those) were re-sent, once; OpenMeter's distinct
    # count did not grow. The stream shard stays the dead run's until its lease expires (one
    # reader a shard), then the next run reads from the last committed checkpoint.
    assert during_lease.sent == 0
    assert after_lease.sent == 40 and after_lease.remaining == 0
    assert state.unique_keys() == {(e.source, e.id) for e in events}
    assert set(state.resent()) == killed
    assert set(state.resent().values()) == {2}
    assert run_flush(url, clock=lambda: time.time() + 31).sent == 0


def test_two_concurrent_runs_deliver_each_event_once(aws, sink):
    # Given
    state, url = sink
    table = aws["EventsTable"]
    events = make_events(2000)
    fill_outbox(table, events)
    results: list[FlushResult] = []
    barrier = threading.Barrier(2)

    def one_run() -> None:
        barrier.wait()
        results.append(run_flush(url, config=fast_config(batch_size=25, concurrency=4)))

    # When
    runs = [threading.Thread(target=one_run) for _ in range(2)]
    for t in runs:
        t.start()
    for t in runs:
        t.join(120)

    # Then: no event sent twice, none lost
    assert len(results) == 2
    assert state.unique_keys() == {(e.source, e.id) for e in events}
    assert state.resent() == {}
    assert sum(r.sent for r in results) == 2000


def test_two_concurrent_runs_without_shard_leases_still_deliver_each_event_once(aws, sink):
    # Given: both runs walk the same shards, so their group claims collide
    state, url = sink
    table = aws["EventsTable"]
    events = make_events(600)
    fill_outbox(table, events)
    results: list[FlushResult] = []
    barrier = threading.Barrier(2)
    config = fast_config(batch_size=25, concurrency=4, shard_leases=False)

    def one_run() -> None:
        barrier.wait()
        results.append(run_flush(url, config=config))

    # When
    runs = [threading.Thread(target=one_run) for _ in range(2)]
    for t in runs:
        t.start()
    for t in runs:
        t.join(120)

    # Then
    assert len(results) == 2
    assert state.unique_keys() == {(e.source, e.id) for e in events}
    assert state.resent() == {}
    assert sum(r.sent for r in results) == 600


def test_group_claims_skip_segments_another_run_holds_and_marks_need_the_lease(aws):
    # Given: 125 pending segments (two transactions' worth), every third leased to another run
    table = aws["EventsTable"]
    pks = fill_outbox(table, make_events(250), segment_size=2, legacy=True)
    now_ms = int(time.time() * 1000)
    theirs = set(pks[::3])
    taken = segments.claim_many(table, theirs, owner="other", now_ms=now_ms, lease_ms=60_000)

    # When
    mine = segments.claim_many(table, pks, owner="me", now_ms=now_ms, lease_ms=60_000)
    marked = segments.mark_sent_many(
        table, pks, owner="me", sent_at="2026-11-20T10:00:01.000Z", now_s=int(time.time())
    )

    # Then
    assert taken == theirs
    assert mine == set(pks) - theirs
    assert marked == mine
    items = {i["pk"]: i for i in events_table_items(table)[1]}
    assert {(items[p]["status"], items[p]["lease_owner"]) for p in theirs} == {("pending", "other")}
    assert {items[p]["status"] for p in mine} == {"sent"}
    assert not [p for p in mine if "lease_owner" in items[p] or "outbox_shard" in items[p]]
    assert segments.count_pending(table) == 2 * len(theirs)


def test_a_stream_shard_leased_by_a_live_run_is_left_to_it(aws, sink):
    # Given: another live run holds every stream shard's lease (and checkpoint)
    state, url = sink
    fill_outbox(aws["EventsTable"], make_events(20))
    arn = stream.stream_arn(aws["EventsTable"])
    assert arn is not None
    shards = stream.shards(arn)
    now_ms = int(time.time() * 1000)
    held = [
        stream.acquire(
            aws["IdempotencyTable"],
            aws["EventsTable"],
            s.shard_id,
            owner="other",
            now_ms=now_ms,
            lease_ms=60_000,
        )
        is not None
        for s in shards
    ]

    # When
    blocked = run_flush(url)
    for s in shards:
        stream.release(aws["IdempotencyTable"], aws["EventsTable"], s.shard_id, owner="other")
    freed = run_flush(url)

    # Then
    assert held == [True] * len(shards)
    assert (blocked.sent, blocked.remaining) == (0, 20)
    assert (freed.sent, freed.remaining) == (20, 0)
    assert len(state.unique_keys()) == 20


def test_a_segment_shard_leased_by_a_live_run_is_left_to_it(aws, sink):
    # Given: segments left by the layout before the stream; another run holds every shard
    state, url = sink
    fill_outbox(aws["EventsTable"], make_events(20), legacy=True)
    now_ms = int(time.time() * 1000)
    held = [
        shard_leases.acquire_shard(
            aws["IdempotencyTable"],
            aws["EventsTable"],
            str(s),
            owner="other",
            now_ms=now_ms,
            lease_ms=60_000,
        )
        for s in range(segments.OUTBOX_SHARDS)
    ]

    # When
    blocked = run_flush(url)
    for s in range(segments.OUTBOX_SHARDS):
        shard_leases.release_shard(
            aws["IdempotencyTable"], aws["EventsTable"], str(s), owner="other"
        )
    freed = run_flush(url)

    # Then
    assert held == [True] * segments.OUTBOX_SHARDS
    assert (blocked.sent, blocked.remaining) == (0, 20)
    assert (freed.sent, freed.remaining) == (20, 0)
    assert len(state.unique_keys()) == 20


def test_openmeter_disabled_sends_nothing_and_loses_nothing(aws, sink, monkeypatch):
    # Given
    state, url = sink
    table = aws["EventsTable"]
    fill_outbox(table, make_events(30))
    monkeypatch.setenv("OPENMETER_ENABLED", "false")
    get_settings.cache_clear()

    # When
    paused = run_flush(url)
    monkeypatch.setenv("OPENMETER_ENABLED", "true")
    get_settings.cache_clear()
    resumed = run_flush(url)

    # Then
    assert (paused.sent, paused.remaining) == (0, 30)
    assert resumed.sent == 30 and resumed.remaining == 0
    assert len(state.unique_keys()) == 30


def test_run_stops_before_the_deadline_and_the_next_run_finishes(aws, sink):
    # Given: a Lambda with less time left than the safety margin plus one request
    state, url = sink
    table = aws["EventsTable"]
    fill_outbox(table, make_events(60))

    # When
    short = run_flush(url, remaining_ms=lambda: 5200, config=fast_config(safety_ms=5000))
    full = run_flush(url, remaining_ms=lambda: 60_000)

    # Then
    assert short.stopped == "deadline" and short.sent == 0 and short.remaining == 60
    assert full.sent == 60 and full.remaining == 0
    assert state.resent() == {}


def test_openmeter_down_releases_claims_and_stops_then_a_later_run_delivers(aws, sink):
    # Given
    state, url = sink
    table = aws["EventsTable"]
    fill_outbox(table, make_events(100))
    state.set_probabilities(error=1.0)

    # When
    down = run_flush(url, config=fast_config(batch_size=50, concurrency=1))
    state.clear_faults()
    up = run_flush(url)

    # Then
    assert down.stopped == "openmeter_unavailable" and down.sent == 0 and down.retried > 0
    assert up.sent == 100 and up.remaining == 0
    assert state.resent() == {}


def test_wrong_api_key_stops_the_run_without_dead_lettering(aws, sink):
    # Given
    state, url = sink
    table = aws["EventsTable"]
    fill_outbox(table, make_events(10))
    state.api_key = "another-key"

    # When
    result = run_flush(url)

    # Then
    assert result.stopped == "openmeter_misconfigured"
    assert (result.sent, result.dead_lettered, result.remaining) == (0, 0, 10)
    assert not [i for i in scan_items(table) if "lease_owner" in i]


def test_lambda_handler_runs_the_flush_on_a_scheduled_event(
    aws, sink, lambda_context, event_loader
):
    # Given
    from functions.openmeter_flush import app

    state, _ = sink
    fill_outbox(aws["EventsTable"], make_events(5))

    # When
    result = app.lambda_handler(event_loader("eventbridge-scheduled"), lambda_context)

    # Then
    assert {"sent", "retried", "dead_lettered", "remaining", "duration_ms"} <= set(result)
    assert result["sent"] == 5 and result["remaining"] == 0
    assert len(state.unique_keys()) == 5


def test_republishes_to_nats_with_a_tenant_unique_msg_id(aws, sink, nats_server):
    # Given: events ingest could not publish, already delivered to OpenMeter
    import asyncio

    import nats

    from meterbridge.bus.subjects import STREAM_NAME

    _, url = sink
    table = aws["EventsTable"]
    events = make_events(12, tenant="t7")
    pks = fill_outbox(table, events, tenant="t7")
    # (ingest marks what NATS did not acknowledge; nothing on the happy path)
    assert outbox.mark_pending(table, pks, accepted_at="2026-11-20T10:00:00.000Z") == 12

    # When
    result = run_flush(url)

    # Then
    async def stream_messages() -> list[Any]:
        nc = await nats.connect(nats_server.url)
        try:
            js = nc.jetstream(timeout=30)
            sub = await js.pull_subscribe("meterbridge.tenant.t7.usage", stream=STREAM_NAME)
            return await sub.fetch(12, timeout=30)
        finally:
            await nc.close()

    messages = asyncio.run(stream_messages())
    assert result.republished == 12 and result.sent == 12
    assert {m.headers["Nats-Msg-Id"] for m in messages} == {f"{e.source}#{e.id}" for e in events}
    items = scan_items(table)
    assert not [i for i in items if "republish_shard" in i]


def test_mark_published_clears_the_marker_and_tolerates_a_record_that_is_gone(aws):
    # Given one event waiting for NATS, and the key of one whose record is gone (TTL)
    table = aws["EventsTable"]
    [event] = make_events(1, prefix="pub")
    pks = fill_outbox(table, [event])
    assert outbox.mark_pending(table, pks, accepted_at="2026-11-20T10:00:00.000Z") == 1
    # When both are marked published
    marked = outbox.mark_published(table, event.source, event.id)
    gone = outbox.mark_published(table, event.source, "never-stored")
    # Then the first leaves the republish index, the second reports nothing to mark
    assert (marked, gone) == (True, False)
    record = outbox.get_event(table, outbox.event_pk(event.source, event.id))
    assert record is not None and "republish_shard" not in record
    assert outbox.get_event(table, outbox.event_pk(event.source, "never-stored")) is None
