"""Storing a batch exactly once (logic/ingest/quota.py) against the in-memory outbox."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from meterbridge.dal.events import TRANSACT_MAX
from meterbridge.dal.outbox import SEGMENT_MAX_BYTES
from meterbridge.logic import meters
from meterbridge.logic.ingest import parse, quota
from meterbridge.logic.periods import period_of
from meterbridge.plans import catalog
from meterbridge.timestamps import rfc3339
from tests.support.fakes.outbox import FakeOutbox, FakeUsage

NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
PERIOD = period_of(NOW)
TENANT = "t-quota"


def _pending(outbox: FakeOutbox, n: int, *, prefix: str = "e", pad: int = 0) -> quota.Pending:
    raw = [{"id": f"{prefix}{i}", "type": "api.call", "data": {"pad": "x" * pad}} for i in range(n)]
    batch = parse.validate(TENANT, raw, now=NOW)
    pending = quota.Pending()
    for event, feeds in zip(batch.events, batch.feeds, strict=True):
        pending.items.append(
            outbox.record(event, tenant_id=TENANT, kind="usage", accepted_at=rfc3339(NOW))
        )
        pending.fed.append([meters.Fed(PERIOD, f, event.time, event.id) for f in feeds])
        pending.events.append(event)
    return pending


def test_a_chunk_holds_its_records_and_cell_writes_within_one_transaction() -> None:
    # Given 1,000 events, each feeding the same few cells
    pending = _pending(FakeOutbox(), 1000)

    # When they are cut into chunks
    chunks = quota.chunks(pending)

    # Then every chunk fits one transaction with its cell writes, and no event is lost
    budget = meters.OpsBudget()
    budget.add([f for fs in chunks[0].fed for f in fs])
    assert all(len(c.items) + budget.with_([]) <= TRANSACT_MAX for c in chunks)
    assert len(chunks[0].items) == TRANSACT_MAX - budget.with_([])
    assert [e.id for c in chunks for e in c.events] == [e.id for e in pending.events]


def test_a_chunk_stays_within_the_request_size() -> None:
    # Given 100 events of about 60 KB each
    pending = _pending(FakeOutbox(), 100, pad=60_000)

    # When they are cut into chunks
    chunks = quota.chunks(pending)

    # Then no chunk's records pass the size limit
    assert len(chunks) > 1
    assert all(sum(r.size for r in c.items) <= SEGMENT_MAX_BYTES for c in chunks)


def test_events_stored_before_become_duplicates_and_the_rest_is_stored_once() -> None:
    # Given an outbox that already holds e0..e4 (a retry of part of this batch)
    outbox, usage = FakeOutbox(), FakeUsage(table="usage-dups")
    plan = catalog().plan("pro")
    quota.store(TENANT, plan, PERIOD, _pending(outbox, 5), NOW, outbox_=outbox, usage=usage)

    # When the whole batch of ten is stored
    written, duplicates, refused = quota.store(
        TENANT, plan, PERIOD, _pending(outbox, 10), NOW, outbox_=outbox, usage=usage
    )

    # Then the five old ones are duplicates, the five new ones stored, nothing refused
    assert sorted(e.id for _, e in written) == [f"e{i}" for i in range(5, 10)]
    assert (duplicates, refused) == (5, 0)
    assert len(outbox.stored) == 10
    assert outbox.accept_calls == [5, 10, 5]  # the cancelled chunk, retried without the five


def test_a_hard_limit_stores_what_fits_in_request_order_and_refuses_the_rest() -> None:
    # Given a free tenant two events short of its monthly api_calls quota
    outbox, usage = FakeOutbox(), FakeUsage(table="usage-cap")
    plan = catalog().plan("free")
    limit = plan.limit("api_calls")
    assert limit is not None
    usage.totals[(TENANT, PERIOD, "api_calls")] = limit - 2
    outbox.counters[(PERIOD, "api_calls", None)] = limit - 2

    # When five events are stored
    written, duplicates, refused = quota.store(
        TENANT, plan, PERIOD, _pending(outbox, 5), NOW, outbox_=outbox, usage=usage
    )

    # Then the first two are stored and the last three refused
    assert [e.id for _, e in written] == ["e0", "e1"]
    assert (duplicates, refused) == (0, 3)
    assert outbox.counters[(PERIOD, "api_calls", None)] == Decimal(limit)
