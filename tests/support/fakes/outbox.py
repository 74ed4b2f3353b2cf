"""In-memory outbox, usage counters and OpenMeter for unit tests of ingest and flush logic.

``FakeOutbox`` follows ``IngestOutbox`` and ``DeadLetters`` (dal/outbox/repository.py): a
record put only if new, a chunk all or nothing, a cancelled chunk naming the positions of the
records stored before and whether a capped counter refused; ``FakeUsage`` follows
``UsageStore``; ``FakeOpenMeter`` refuses a batch holding a poison event id, as OpenMeter's 400.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from meterbridge.adapters.openmeter import OpenMeterRejected
from meterbridge.dal.outbox import records
from meterbridge.dal.usage import CellOp
from meterbridge.models.cloudevent import CloudEvent, Kind
from meterbridge.models.outbox import Accepted, Record

Key = tuple[str, str]


@dataclass
class FakeOutbox:
    stored: dict[Key, Record] = field(default_factory=dict)
    # Counter cells, by their cell ``(period, meter, group)``, as ``add`` ops moved them (one
    # tenant per fake).
    counters: dict[Any, Decimal] = field(default_factory=dict)
    unpublished: set[Key] = field(default_factory=set)
    dead: dict[Key, str] = field(default_factory=dict)
    dead_count: int = 0
    accept_calls: list[int] = field(default_factory=list)

    def record(
        self, event: CloudEvent, *, tenant_id: str | None, kind: Kind, accepted_at: str
    ) -> Record:
        return records.record(event, tenant_id=tenant_id, kind=kind, accepted_at=accepted_at)

    def accept(self, chunk: Sequence[Record], counters: Sequence[CellOp]) -> Accepted:
        self.accept_calls.append(len(chunk))
        outcome = Accepted(written=False)
        outcome.duplicates = {
            i for i, r in enumerate(chunk) if (r.source, r.event_id) in self.stored
        }
        for op in counters:
            used = self.counters.get(op.tag, Decimal(0))
            if op.kind == "add" and op.cap is not None and used + Decimal(op.amount) > op.cap:
                outcome.over_cap = True
        if outcome.duplicates or outcome.over_cap:
            return outcome
        for r in chunk:
            self.stored[(r.source, r.event_id)] = r
        for op in counters:
            if op.kind == "add":
                self.counters[op.tag] = self.counters.get(op.tag, Decimal(0)) + Decimal(op.amount)
        return Accepted(written=True)

    def enqueue(self, event: CloudEvent, *, tenant_id: str | None, kind: Kind) -> bool:
        key = (event.source, event.id)
        if key in self.stored:
            return False
        self.stored[key] = self.record(
            event, tenant_id=tenant_id, kind=kind, accepted_at="2026-11-20T10:00:00.000Z"
        )
        return True

    def mark_unpublished(self, events: Sequence[CloudEvent], *, accepted_at: str) -> int:
        keys = [(e.source, e.id) for e in events if (e.source, e.id) in self.stored]
        self.unpublished.update(keys)
        return len(keys)

    def dead_letter(self, source: str, event_id: str, *, error: str, dead_at: str) -> bool:
        if (source, event_id) in self.dead:
            return False
        self.dead[(source, event_id)] = error
        return True

    def count_dead(self, delta: int) -> None:
        self.dead_count += delta


@dataclass
class FakeUsage:
    """Period totals by (tenant, period, meter), and the threshold markers put."""

    table: str = "usage-fake"
    totals: dict[tuple[str, str, str], Decimal] = field(default_factory=dict)
    marked: set[tuple[str, str, str, int]] = field(default_factory=set)
    reads: int = 0

    def total(self, tenant_id: str, period: str, meter: str, aggregation: str) -> Decimal:
        self.reads += 1
        return self.totals.get((tenant_id, period, meter), Decimal(0))

    def mark_threshold(
        self, tenant_id: str, period: str, meter: str, pct: int, expires_at: int
    ) -> bool:
        key = (tenant_id, period, meter, pct)
        if key in self.marked:
            return False
        self.marked.add(key)
        return True


@dataclass
class FakeOpenMeter:
    """``send_batch`` as the OpenMeter client's: one attempt per batch, a 400 for a batch
    holding any of ``poison`` (event ids)."""

    poison: set[str] = field(default_factory=set)
    timeout_s: float = 10.0
    batches: list[list[str]] = field(default_factory=list)
    received: list[str] = field(default_factory=list)

    def send_batch(self, events: Sequence[str], *, deadline: float | None = None) -> int:
        ids = [json.loads(e)["id"] for e in events]
        self.batches.append(ids)
        bad = [i for i in ids if i in self.poison]
        if bad:
            raise OpenMeterRejected(
                "OpenMeter rejected the batch", http_status=400, details={"ids": bad}
            )
        self.received.extend(ids)
        return 1
