"""The outbox as the logic sees it: repositories that take and return models (issue 19).

``IngestOutbox`` is what ingest (and its threshold alerts and NATS publish) needs; ``Outbox``
adds what the flush reads and writes. ``DynamoOutbox`` is the DynamoDB implementation: keys,
item shapes, transactions and their cancellation reasons stay below it, in ``records``,
``segments``, ``backlog``, ``republish``, ``deadletters`` and ``dal/events.py``. Unit tests
pass an in-memory fake (tests/support/fakes/outbox.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from meterbridge.dal import events as events_dal
from meterbridge.dal.outbox import backlog, deadletters, ledger, records, republish, segments
from meterbridge.dal.usage import CellOp
from meterbridge.models.cloudevent import CloudEvent, Kind
from meterbridge.models.outbox import Accepted, Parked, Record, Segment, Unpublished

# An opaque position in a paged read (the next page starts after it).
Cursor = dict[str, Any]


class IngestOutbox(Protocol):
    """Accepting events: records with their counter writes, one atomic step per chunk."""

    def record(
        self, event: CloudEvent, *, tenant_id: str | None, kind: Kind, accepted_at: str
    ) -> Record: ...

    def accept(self, chunk: Sequence[Record], counters: Sequence[CellOp]) -> Accepted: ...

    def enqueue(self, event: CloudEvent, *, tenant_id: str | None, kind: Kind) -> bool: ...

    def mark_unpublished(self, events: Sequence[CloudEvent], *, accepted_at: str) -> int: ...


class DeadLetters(Protocol):
    """Where the flush puts an event OpenMeter refused."""

    def dead_letter(self, source: str, event_id: str, *, error: str, dead_at: str) -> bool: ...

    def count_dead(self, delta: int) -> None: ...


class DynamoOutbox:
    """The outbox in the events table (and its backlog in the idempotency table)."""

    def __init__(self, table: str, lease_table: str | None = None) -> None:
        self.table = table
        self.lease_table = lease_table

    # -- ingest ----------------------------------------------------------------------------

    def record(
        self, event: CloudEvent, *, tenant_id: str | None, kind: Kind, accepted_at: str
    ) -> Record:
        return records.record(event, tenant_id=tenant_id, kind=kind, accepted_at=accepted_at)

    def accept(self, chunk: Sequence[Record], counters: Sequence[CellOp]) -> Accepted:
        return events_dal.write_chunk(self.table, chunk, counters)

    def enqueue(self, event: CloudEvent, *, tenant_id: str | None, kind: Kind) -> bool:
        return records.enqueue(self.table, event, tenant_id=tenant_id, kind=kind)

    def mark_unpublished(self, events: Sequence[CloudEvent], *, accepted_at: str) -> int:
        pks = [records.event_pk(e.source, e.id) for e in events]
        return republish.mark_pending(self.table, pks, accepted_at=accepted_at)

    # -- dead letters ------------------------------------------------------------------------

    def dead_letter(self, source: str, event_id: str, *, error: str, dead_at: str) -> bool:
        pk = records.event_pk(source, event_id)
        return deadletters.dead_letter(self.table, pk, error=error, dead_at=dead_at)

    def count_dead(self, delta: int) -> None:
        """Move the ledger's dead-letter count (kept only beside an idempotency table)."""
        if self.lease_table is not None:
            ledger.add(self.lease_table, self.table, dead=delta)

    def count_dead_letters(self) -> int:
        return deadletters.count_dead_letters(self.table)

    # -- segments of the layout before the stream -------------------------------------------

    def any_pending(self, shard: str) -> bool:
        return segments.any_pending(self.table, shard)

    def count_pending(self) -> int:
        return segments.count_pending(self.table)

    def pending_segments(
        self, shard: str, *, limit: int, after: Cursor | None
    ) -> tuple[list[Segment], Cursor | None]:
        items, last = segments.pending_page(
            self.table, shard, limit=limit, start_key=after, attributes=segments.FLUSH_ATTRIBUTES
        )
        return [_segment(i) for i in items], last

    def claim(self, keys: Iterable[str], *, owner: str, now_ms: int, lease_ms: int) -> set[str]:
        return segments.claim_many(self.table, keys, owner=owner, now_ms=now_ms, lease_ms=lease_ms)

    def mark_sent(self, keys: Iterable[str], *, owner: str, sent_at: str, now_s: int) -> set[str]:
        return segments.mark_sent_many(self.table, keys, owner=owner, sent_at=sent_at, now_s=now_s)

    def marked_by(self, keys: Iterable[str], *, owner: str) -> set[str]:
        return segments.marked_by(self.table, keys, owner=owner)

    def release(self, keys: Iterable[str], *, owner: str, error: str) -> set[str]:
        return segments.release_many(self.table, keys, owner=owner, error=error)

    # -- the backlog -------------------------------------------------------------------------

    def _ledger(self) -> str:
        assert self.lease_table is not None, "the backlog lives in the idempotency table"
        return self.lease_table

    def park(self, events: Sequence[tuple[str, str]]) -> int:
        return backlog.park(self._ledger(), self.table, events)

    def parked(self, *, limit: int) -> list[Parked]:
        return [_parked(i) for i in backlog.page(self._ledger(), self.table, limit=limit)]

    def lease_parked(self, item: Parked, *, owner: str, now_ms: int, lease_ms: int) -> bool:
        return backlog.lease(
            self._ledger(), _backlog_key(item), owner=owner, now_ms=now_ms, lease_ms=lease_ms
        )

    def release_parked(self, item: Parked, *, owner: str) -> None:
        backlog.release(self._ledger(), _backlog_key(item), owner=owner)

    def delivered(self, item: Parked, *, owner: str) -> bool:
        wrapped = {**_backlog_key(item), "count": item.count}
        return backlog.delivered(self._ledger(), self.table, wrapped, owner=owner)

    # -- NATS republish ----------------------------------------------------------------------

    def unpublished(
        self, shard: str, *, limit: int, after: Cursor | None
    ) -> tuple[list[Unpublished], Cursor | None]:
        items, last = republish.republish_page(self.table, shard, limit=limit, start_key=after)
        return [_unpublished(i) for i in items], last

    def mark_published(self, source: str, event_id: str) -> bool:
        return republish.mark_published(self.table, source, event_id)


def _segment(item: dict[str, Any]) -> Segment:
    return Segment(
        key=str(item["pk"]),
        events=tuple(segments.segment_events(item)) if "events" in item else (),
        count=int(item.get("count", 1)),
        lease_until=int(item.get("lease_until", 0)),
        tenant_id=item.get("tenant_id"),
    )


def _parked(item: dict[str, Any]) -> Parked:
    return Parked(
        key=(str(item["pk"]), str(item["sk"])),
        events=tuple(str(item["events"]).split("\n")),
        count=int(item["count"]),
    )


def _backlog_key(item: Parked) -> dict[str, Any]:
    return {"pk": item.key[0], "sk": item.key[1]}


def _unpublished(item: dict[str, Any]) -> Unpublished:
    event = json.loads(item["event"])
    return Unpublished(
        source=str(event["source"]),
        event_id=str(event["id"]),
        payload=event,
        tenant_id=item.get("tenant_id"),
        kind=item.get("kind"),
    )
