"""The stream outbox's long-haul guarantees (issue 16): a week-long OpenMeter outage, and the
upgrade from the segment layout. Real moto server, real OpenMeter stand-in on loopback."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from meterbridge.dal import dynamo
from meterbridge.dal.outbox import backlog, ledger, segments, stream
from meterbridge.logic import flush
from tests.support import flush as flush_support
from tests.support.builders import events_table_items
from tests.support.flush import fast_client, fast_config, fill_outbox, make_events

sink = flush_support.sink  # the OpenMeter fake fixture

DAY_S = 24 * 3600


def _run(url: str, clock: Any, **config: Any) -> flush.FlushResult:
    return flush.flush_outbox(
        None, config=fast_config(**config), client=fast_client(url), clock=clock
    )


def _behind_checkpoints(events_table: str, lease_table: str) -> tuple[int, int]:
    """(stream records past every checkpoint, records in the stream): what a 24-hour
    retention could still drop is the first number."""
    arn = stream.stream_arn(events_table)
    assert arn is not None
    ahead = total = 0
    for shard in stream.shards(arn):
        checkpoint = dynamo.get(
            lease_table, {"pk": f"FLUSH#{events_table}#STREAM#{shard.shard_id}", "sk": "CHECKPOINT"}
        )
        upto = int((checkpoint or {}).get("seq") or 0)
        it = stream.iterator(arn, shard.shard_id, None)
        while it is not None:
            records, it = stream.read(it)
            if not records:
                break
            total += len(records)
            ahead += sum(1 for r in records if int(stream.sequence(r)) > upto)
    return ahead, total


def test_openmeter_down_for_seven_days_loses_nothing_and_catches_up_by_itself(aws, sink):
    # Given: OpenMeter refuses everything for a week while tenants keep sending, and the flush
    # runs on its schedule (a simulated clock: one run per simulated day is the worst case,
    # as the stream keeps only 24 hours)
    state, url = sink
    events_table, lease_table = aws["EventsTable"], aws["IdempotencyTable"]
    state.set_probabilities(unavailable=1.0)
    start = time.time()
    accepted: list[Any] = []
    for day in range(7):
        now = start + day * DAY_S
        batch = make_events(150, prefix=f"day{day}")
        at = (datetime.fromtimestamp(now, UTC)).isoformat(timespec="milliseconds")
        fill_outbox(events_table, batch, accepted_at=at.replace("+00:00", "Z"))
        accepted.extend(batch)

        # When: the day's run finds OpenMeter down
        result = _run(url, clock=lambda now=now: now)

        # Then: it sent nothing and parked the day's events beyond the stream's reach: no
        # record is left past a checkpoint, so trimming the stream loses nothing
        assert result.sent == 0 and result.stopped == "openmeter_unavailable"
        assert result.parked == 150
        assert _behind_checkpoints(events_table, lease_table)[0] == 0
        assert result.remaining == 150 * (day + 1)
    assert ledger.read(lease_table, events_table)["backlog"] == 150 * 7

    # When: OpenMeter comes back on day 8 (within the 35-day late-event window), and the
    # scheduled runs go on with no operator
    state.clear_faults()
    later = start + 8 * DAY_S
    results = [_run(url, clock=lambda: later) for _ in range(3)]

    # Then: every event reached OpenMeter exactly once, the backlog is empty
    assert state.unique_keys() == {(e.source, e.id) for e in accepted}
    assert state.resent() == {}
    assert sum(r.sent for r in results) == len(accepted)
    assert results[-1].remaining == 0
    assert backlog.page(lease_table, events_table, limit=100) == []
    assert ledger.read(lease_table, events_table)["backlog"] == 0


def test_a_backlog_of_the_segment_layout_drains_after_the_upgrade_once_each(aws, sink):
    # Given: a stack upgraded with a backlog the code before issue 16 wrote (records with
    # their segments, in its own transactions), some of it leased by a run that died, and
    # events accepted by the new code after the upgrade
    state, url = sink
    table = aws["EventsTable"]
    old = make_events(300, prefix="old")
    at = datetime.now(UTC) - timedelta(minutes=30)
    stamp = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    for start in range(0, len(old), 40):
        items = [
            segments.legacy_item(e, tenant_id="t1", kind="usage", accepted_at=stamp)
            for e in old[start : start + 40]
        ]
        ops = segments.legacy_put_ops(table, items)
        dynamo.client().transact_write_items(TransactItems=ops)  # type: ignore[arg-type]
    _, legacy = events_table_items(table)
    dead_run = [s["pk"] for s in legacy[:2]]
    now_ms = int(time.time() * 1000)
    assert segments.claim_many(table, dead_run, owner="died", now_ms=now_ms, lease_ms=30_000)
    new = make_events(200, prefix="new")
    fill_outbox(table, new)

    # When: the new flush runs, now and after the dead run's leases expired
    first = _run(url, clock=time.time)
    second = _run(url, clock=lambda: time.time() + 31)

    # Then: every event, old and new, reached OpenMeter exactly once (the old records'
    # stream INSERTs are left to their segments), and no segment is left pending
    assert state.unique_keys() == {(e.source, e.id) for e in old + new}
    assert state.resent() == {}
    assert first.sent + second.sent == 500
    assert second.remaining == 0
    _, legacy = events_table_items(table)
    assert {s["status"] for s in legacy} == {"sent"}
    assert not any(segments.any_pending(table, str(s)) for s in range(segments.OUTBOX_SHARDS))


def test_a_flush_that_lags_half_a_retention_parks_before_the_stream_can_trim(aws, sink):
    # Given: records the stream has held for 13 hours (a simulated clock), OpenMeter healthy
    state, url = sink
    events_table, lease_table = aws["EventsTable"], aws["IdempotencyTable"]
    events = make_events(80, prefix="late")
    fill_outbox(events_table, events)
    later = time.time() + 13 * 3600

    # When: a run reads them
    lagging = _run(url, clock=lambda: later)

    # Then: it parked them instead of sending (parking is a few writes, and it ends the
    # stream's hold on them), and the next run delivers them from the backlog, once each
    assert (lagging.sent, lagging.parked) == (0, 80)
    assert _behind_checkpoints(events_table, lease_table)[0] == 0
    assert lagging.remaining == 80
    caught_up = _run(url, clock=lambda: later + 60)
    assert caught_up.sent == 80 and caught_up.remaining == 0
    assert state.unique_keys() == {(e.source, e.id) for e in events}
    assert state.resent() == {}
