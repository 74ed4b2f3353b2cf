"""The stream outbox's long-haul guarantees (issue 16): a week-long OpenMeter outage, a flush
that did not run for two days (the stream trimmed past its checkpoint), and the
upgrade from the segment layout. Real moto server, real OpenMeter stand-in on loopback."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from meterbridge.dal import dynamo
from meterbridge.dal.outbox import backlog, ledger, recovery, segments, stream
from meterbridge.logic import flush
from meterbridge.models.flush import FlushResult
from tests.support import flush as flush_support
from tests.support.builders import events_table_items
from tests.support.flush import (
    fast_client,
    fast_config,
    fill_outbox,
    make_events,
    trim_stream_before,
)

sink = flush_support.sink  # the OpenMeter fake fixture

DAY_S = 24 * 3600


def _run(url: str, clock: Any, **config: Any) -> FlushResult:
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


def _stamp(epoch_s: float) -> str:
    return (
        datetime.fromtimestamp(epoch_s, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _two_days_without_a_flush(events_table: str, t0: float) -> dict[str, list[Any]]:
    """Events accepted around a flush at ``t0`` and over the two days with no flush after it
    (a simulated clock on their ``accepted_at``; their stream order is their order here)."""
    groups = {
        "delivered": make_events(100, prefix="before"),  # t0 - 3 h, delivered at t0
        "edge": make_events(10, prefix="edge"),  # t0, the last committed: inside the margin
        "gap": make_events(150, prefix="gap"),  # t0 + 6 h .. t0 + 20 h: trimmed unread
        "gap_late": make_events(100, prefix="gaplate"),
        "kept_first": make_events(10, prefix="kept"),  # t0 + 47.5 h: the stream still has
        "kept": make_events(100, prefix="recent"),  # t0 + 48 h
    }
    fill_outbox(events_table, groups["delivered"], accepted_at=_stamp(t0 - 3 * 3600))
    fill_outbox(events_table, groups["edge"], accepted_at=_stamp(t0))
    return groups


def _accept_the_two_days(events_table: str, t0: float, groups: dict[str, list[Any]]) -> None:
    fill_outbox(events_table, groups["gap"], accepted_at=_stamp(t0 + 6 * 3600))
    fill_outbox(events_table, groups["gap_late"], accepted_at=_stamp(t0 + 20 * 3600))
    fill_outbox(events_table, groups["kept_first"], accepted_at=_stamp(t0 + 47.5 * 3600))
    fill_outbox(events_table, groups["kept"], accepted_at=_stamp(t0 + 48 * 3600))


def _keys(events: list[Any]) -> set[tuple[str, str]]:
    return {(e.source, e.id) for e in events}


def test_a_flush_that_did_not_run_for_two_days_recovers_the_trimmed_gap(aws, sink, moto_server):
    # Given: a flush at t0 delivered everything accepted so far; then no flush ran for two
    # days while tenants kept sending, and the stream trimmed everything older than 24 hours
    # (the checkpoint included)
    state, url = sink
    events_table, lease_table = aws["EventsTable"], aws["IdempotencyTable"]
    t0 = time.time()
    groups = _two_days_without_a_flush(events_table, t0)
    first = _run(url, clock=lambda: t0)
    assert first.sent == 110 and first.remaining == 0
    _accept_the_two_days(events_table, t0, groups)
    trim_stream_before(moto_server.url, events_table, _keys(groups["kept_first"]))
    everything = [e for g in groups.values() for e in g]

    # When: the flush runs again, two days later, and on its schedule after that
    later = t0 + 48 * 3600 + 60
    results = [_run(url, clock=lambda: later)]
    windows_after_first = recovery.windows(lease_table, events_table)
    results += [_run(url, clock=lambda i=i: later + 60 * (i + 1)) for i in range(3)]

    # Then: the gap the stream dropped was read back from the event records, and every
    # accepted event reached OpenMeter; by OpenMeter's (source, id) each exactly once, and the
    # only re-sends are the margins at the gap's two ends (deduplicated by OpenMeter)
    in_window = len(groups["edge"]) + len(groups["gap"]) + len(groups["gap_late"]) + 10
    assert results[0].recovered == in_window and results[0].recovering == 0
    assert windows_after_first == []
    assert state.unique_keys() == _keys(everything)
    margins = _keys(groups["edge"]) | _keys(groups["kept_first"])
    assert set(state.resent()) <= margins
    assert not set(state.resent()) & _keys(groups["gap"] + groups["gap_late"] + groups["kept"])
    assert results[-1].remaining == 0 and results[-1].recovering == 0
    assert recovery.windows(lease_table, events_table) == []


class _Killed(BaseException):
    """The Lambda's end, mid-run: nothing after it runs (no commit, no release)."""


def test_a_run_killed_mid_recovery_resumes_from_its_progress_checkpoint(
    aws, sink, moto_server, monkeypatch
):
    # Given: the same two days without a flush, and a trimmed stream
    state, url = sink
    events_table, lease_table = aws["EventsTable"], aws["IdempotencyTable"]
    t0 = time.time()
    groups = _two_days_without_a_flush(events_table, t0)
    assert _run(url, clock=lambda: t0).sent == 110
    _accept_the_two_days(events_table, t0, groups)
    trim_stream_before(moto_server.url, events_table, _keys(groups["kept_first"]))
    everything = [e for g in groups.values() for e in g]

    # When: the run that finds the gap dies after the recovery's third Scan page was sent,
    # before its progress was committed (a killed Lambda: no release either)
    pages = {"n": 0}
    real_advance = recovery.advance

    def advance_then_die(*args: Any, **kwargs: Any) -> bool:
        pages["n"] += 1
        if pages["n"] == 3:
            raise _Killed
        return real_advance(*args, **kwargs)

    later = t0 + 48 * 3600 + 60
    page = 100
    with monkeypatch.context() as patched:
        patched.setattr(recovery, "advance", advance_then_die)
        patched.setattr(recovery, "release", lambda *a, **k: None)
        try:
            _run(url, clock=lambda: later, recovery_page=page)
        except _Killed:
            pass
        else:
            raise AssertionError("the run was meant to die mid-recovery")

    # Then: the gap is durable, with the progress of the two committed pages, and status
    # shows the recovery in progress
    from meterbridge.logic.status import outbox_status
    from meterbridge.settings import get_settings

    [window] = recovery.windows(lease_table, events_table)
    assert window.scanned == 2 * page and window.cursor is not None
    shown = outbox_status(get_settings(), datetime.fromtimestamp(later, UTC))
    assert [(g.scanned, g.accepted_to) for g in shown.recovery] == [(2 * page, window.hi)]

    # When: the next runs come after the dead run's leases expired
    after = later + 31
    results = [_run(url, clock=lambda i=i: after + 60 * i, recovery_page=page) for i in range(4)]

    # Then: the recovery resumed where it was committed, not from the start (of the 270
    # events in the window, those of the two committed pages are not read again): only the page
    # the dead run sent unacknowledged (and the gap's margins) reached OpenMeter twice
    assert window.recovered > 0
    assert sum(r.recovered for r in results) == 270 - window.recovered
    assert results[-1].recovering == 0
    assert recovery.windows(lease_table, events_table) == []
    assert state.unique_keys() == _keys(everything)
    margins = _keys(groups["edge"]) | _keys(groups["kept_first"])
    assert len(set(state.resent()) - margins) <= page
    assert results[-1].remaining == 0
    assert outbox_status(get_settings(), datetime.fromtimestamp(after, UTC)).recovery == []


def test_a_shard_whose_parent_left_the_stream_unfinished_recovers_the_parents_tail(
    aws, sink, moto_server
):
    # Given: the flush read a shard up to t0 and never finished it; the shard closed (a split)
    # and, with no flush for two days, left the stream; its child holds only the last hours
    state, url = sink
    events_table, lease_table = aws["EventsTable"], aws["IdempotencyTable"]
    t0 = time.time()
    groups = _two_days_without_a_flush(events_table, t0)
    assert _run(url, clock=lambda: t0).sent == 110
    arn = stream.stream_arn(events_table)
    assert arn is not None
    [child] = stream.shards(arn)
    key = {"pk": f"FLUSH#{events_table}#STREAM#{child.shard_id}", "sk": "CHECKPOINT"}
    read_so_far = dynamo.get(lease_table, key)
    assert read_so_far is not None and read_so_far.get("committed_at")
    parent = "shardId-00000001000000000000-parent01"
    dynamo.client().put_item(
        TableName=lease_table,
        Item=dynamo.serialize({**read_so_far, "pk": f"FLUSH#{events_table}#STREAM#{parent}"}),
    )
    dynamo.client().delete_item(TableName=lease_table, Key=dynamo.serialize(key))
    _accept_the_two_days(events_table, t0, groups)
    trim_stream_before(
        moto_server.url, events_table, _keys(groups["kept_first"]), parent_shard=parent
    )
    everything = [e for g in groups.values() for e in g]

    # When: the flush runs again, two days later, and on its schedule after that
    later = t0 + 48 * 3600 + 60
    results = [_run(url, clock=lambda i=i: later + 60 * i) for i in range(4)]

    # Then: the parent's unread tail was read back from the records, the parent counts as
    # done, and every event reached OpenMeter (re-sends only within the margins)
    in_window = len(groups["edge"]) + len(groups["gap"]) + len(groups["gap_late"]) + 10
    assert results[0].recovered == in_window
    assert stream.checkpoint(lease_table, events_table, parent).done  # type: ignore[union-attr]
    assert state.unique_keys() == _keys(everything)
    margins = _keys(groups["edge"]) | _keys(groups["kept_first"])
    assert set(state.resent()) <= margins
    assert results[-1].remaining == 0 and results[-1].recovering == 0
    assert sum(r.recovered for r in results) == in_window
