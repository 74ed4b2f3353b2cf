"""Store and count events exactly once: chunks of records with their counter writes.

Each chunk is one atomic write (``IngestOutbox.accept``): the records, each only if new, and
the cell writes of the meters they feed (logic/meters.py). A write the outbox refuses says
why, and the chunk is retried without what was refused: records stored before become
duplicates, settled cell writes are left out, and a hard limit shrinks the chunk to the room
left and ends the batch there.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import datetime

from meterbridge.dal import events as events_dal
from meterbridge.dal import outbox
from meterbridge.dal.outbox.repository import IngestOutbox
from meterbridge.dal.usage import UsageStore
from meterbridge.errors import StorageUnavailable
from meterbridge.logic import meters, rate
from meterbridge.models.cloudevent import CloudEvent
from meterbridge.models.outbox import Record
from meterbridge.plans import Plan, catalog
from meterbridge.settings import Settings

COUNTER_TTL_S = 400 * 86400


@dataclass
class Pending:
    """Events to store, each with the meter cells it moves (``meters.Fed``)."""

    items: list[Record] = field(default_factory=list)
    fed: list[list[meters.Fed]] = field(default_factory=list)
    events: list[CloudEvent] = field(default_factory=list)


def check_rate(tenant_id: str, plan: Plan, settings: Settings, now: datetime) -> None:
    """The tenant's ingest budget across processes (logic/rate.py; ``require_tenant`` has
    already taken from the tenant's in-process bucket)."""
    rate.take_shared(tenant_id, plan, settings, now)


def chunks(pending: Pending) -> list[Pending]:
    """Groups of events that fit one transaction with their cell writes (<= 100 items) and
    DynamoDB's 4 MB request (<= ``SEGMENT_MAX_BYTES`` of events)."""
    chunks: list[Pending] = []
    current = Pending()
    budget = meters.OpsBudget()
    size = 0
    for item, fed, event in zip(pending.items, pending.fed, pending.events, strict=True):
        grown = size + item.size
        if current.items and (
            len(current.items) + 1 + budget.with_(fed) > events_dal.TRANSACT_MAX
            or grown > outbox.SEGMENT_MAX_BYTES
        ):
            chunks.append(current)
            current = Pending()
            budget = meters.OpsBudget()
            grown = item.size
        size = grown
        budget.add(fed)
        current.items.append(item)
        current.fed.append(fed)
        current.events.append(event)
    if current.items:
        chunks.append(current)
    return chunks


Written = list[tuple[list[meters.Fed], CloudEvent]]


def store(
    tenant_id: str,
    plan: Plan,
    period: str,
    pending: Pending,
    now: datetime,
    *,
    outbox_: IngestOutbox,
    usage: UsageStore,
) -> tuple[Written, int, int]:
    """Write chunks; returns (feeds, event) stored, late duplicates, and events refused by
    quota.

    A cancelled transaction names its reasons: events stored meanwhile (by an earlier or a
    concurrent request) leave the chunk as duplicates; a MAX/MIN/LATEST cell already as good
    or a UNIQUE_COUNT value already seen leaves out that write; a hard-limit counter that
    refuses the amount shrinks the chunk to the room left, in request order, and ends the
    batch there.
    """
    cat = catalog()
    expires = int(now.timestamp()) + COUNTER_TTL_S
    written: Written = []
    duplicates = refused = 0
    parts = chunks(pending)
    for position, first_try in enumerate(parts):
        chunk, full = first_try, False
        state = meters.CellState()
        for _ in range(40):  # each round removes duplicates, drops settled writes or shrinks
            if not chunk.items:
                break
            fed = [f for fs in chunk.fed for f in fs]
            ops = meters.cell_ops(tenant_id, cat, plan, period, fed, state, usage.table, expires)
            outcome = outbox_.accept(chunk.items, ops)
            if outcome.written:
                meters.remember_markers(tenant_id, usage.table, meters.written_marks(ops))
                written.extend(zip(chunk.fed, chunk.events, strict=True))
                break
            meters.learn(state, ops, outcome.dropped)
            if outcome.dropped:
                meters.remember_markers(
                    tenant_id,
                    usage.table,
                    [ops[i].tag for i in outcome.dropped if ops[i].kind == "mark"],
                )
            if outcome.duplicates:
                keep = [i for i in range(len(chunk.items)) if i not in outcome.duplicates]
                duplicates += len(chunk.items) - len(keep)
                chunk = _select(chunk, keep)
            elif outcome.over_cap:
                keep = meters.within_room(tenant_id, cat, plan, period, chunk.fed, usage)
                refused += len(chunk.items) - len(keep)
                full = full or len(keep) < len(chunk.items)
                chunk = _select(chunk, keep)
            elif outcome.conflict and not outcome.dropped:
                time.sleep(random.uniform(0.005, 0.05))  # let the other transaction finish
        else:
            raise StorageUnavailable(
                "too much contention on these events; retry the request",
                headers={"Retry-After": "1"},
            )
        if full:
            refused += sum(len(c.items) for c in parts[position + 1 :])
            break
    return written, duplicates, refused


def _select(chunk: Pending, keep: list[int]) -> Pending:
    return Pending(
        items=[chunk.items[i] for i in keep],
        fed=[chunk.fed[i] for i in keep],
        events=[chunk.events[i] for i in keep],
    )
