"""The outbox in domain terms: what ingest hands it and what the flush reads back.

The DynamoDB items behind these (keys, attribute names, index entries) stay in
``dal/outbox/``; logic sees only these models (issue 19).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Record:
    """An event to accept: its CloudEvent JSON (the body the flush sends) and who sent it."""

    source: str
    event_id: str
    body: str
    tenant_id: str | None
    kind: str
    event_type: str
    accepted_at: str

    @property
    def size(self) -> int:
        """What the record adds to a transaction's 4 MB request (its body and a separator)."""
        return len(self.body) + 1


@dataclass
class Accepted:
    """What one atomic write of records and their counter updates did.

    ``written`` is all or nothing. When the write was cancelled: ``duplicates`` are the
    positions of records stored before (by a retry or a concurrent request), ``over_cap`` says
    a hard-limit counter refused its amount, ``dropped`` are the positions (into the counter
    updates) of droppable cell writes whose condition failed, and ``conflict`` that another
    transaction held one of the items.
    """

    written: bool
    duplicates: set[int] = field(default_factory=set)
    over_cap: bool = False
    dropped: set[int] = field(default_factory=set)
    conflict: bool = False


@dataclass(frozen=True)
class Segment:
    """A pending segment of the layout before the stream (issue 16): events one write
    accepted, delivered together."""

    key: str
    events: tuple[str, ...]
    count: int
    lease_until: int = 0
    tenant_id: str | None = None


@dataclass(frozen=True)
class Parked:
    """A backlog item: events the flush parked while OpenMeter could not take them."""

    key: tuple[str, str]
    events: tuple[str, ...]
    count: int


@dataclass(frozen=True)
class Unpublished:
    """An event NATS has not acknowledged yet, with where it is published."""

    source: str
    event_id: str
    payload: dict[str, Any]
    tenant_id: str | None
    kind: str | None
