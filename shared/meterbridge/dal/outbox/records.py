"""The event record: the one atomic fact of acceptance (docs/flush.md).

One item per CloudEvent, keyed by its (source, id), which is also the dedupe key:
``pk = "<source>#<id>"``, ``sk = "EVENT"``. It holds the event's JSON (the body the flush sends),
``tenant_id``, ``kind``, ``accepted_at`` and ``expires_at`` (the dedupe window: 45 days from
acceptance), and nothing that puts it in an index: written once, conditional on being new, it
is a single write of about 0.5 KB (1 WRU alone, 2 inside ingest's transaction), and its INSERT
in the table's stream (``NEW_IMAGE``) is what queues it for OpenMeter. No segment, no marker.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from meterbridge.bus.subjects import nats_msg_id
from meterbridge.dal import dynamo
from meterbridge.models.cloudevent import CloudEvent, Kind, now_rfc3339
from meterbridge.models.outbox import Record

EVENT_SK = "EVENT"
# Dedupe records outlive the 35-day late-event window with margin: a duplicate of any event
# ingest may still accept finds its record (docs/flush.md).
DEDUPE_RETENTION_S = 45 * 24 * 3600
NEW = "attribute_not_exists(pk)"


def event_pk(source: str, event_id: str) -> str:
    return nats_msg_id(source, event_id)


def epoch_s(rfc3339: str) -> int:
    return int(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp())


def key(pk: str) -> dict[str, str]:
    return {"pk": pk, "sk": EVENT_SK}


def outbox_item(
    event: CloudEvent,
    *,
    tenant_id: str | None,
    kind: Kind,
    accepted_at: str | None = None,
    nats_pending: bool | None = None,
) -> dict[str, Any]:
    """The event record for ``event`` (plain dict); ``put_ops`` writes it.

    ``nats_pending`` is accepted for callers of the old layout and ignored: a record waits for
    NATS only after a publish failed (``republish.mark_pending``), never on the happy path.
    """
    del nats_pending
    return record_item(record(event, tenant_id=tenant_id, kind=kind, accepted_at=accepted_at))


def record(
    event: CloudEvent, *, tenant_id: str | None, kind: Kind, accepted_at: str | None = None
) -> Record:
    """The record ``accept`` stores for ``event``."""
    return Record(
        source=event.source,
        event_id=event.id,
        body=json.dumps(event.wire(), separators=(",", ":")),
        tenant_id=tenant_id,
        kind=kind,
        event_type=event.type,
        accepted_at=accepted_at or now_rfc3339(),
    )


def record_item(rec: Record) -> dict[str, Any]:
    """The event record's item for ``rec`` (what ``outbox_item`` makes from a CloudEvent)."""
    return {
        "pk": event_pk(rec.source, rec.event_id),
        "sk": EVENT_SK,
        "tenant_id": rec.tenant_id,
        "kind": rec.kind,
        "event_type": rec.event_type,
        "event": rec.body,
        "accepted_at": rec.accepted_at,
        "expires_at": epoch_s(rec.accepted_at) + DEDUPE_RETENTION_S,
    }


def put_new(table: str, item: Mapping[str, Any]) -> dict[str, Any]:
    """A ``TransactWriteItems`` entry that puts ``item`` only if its key is new."""
    return {"Put": {"TableName": table, "Item": dynamo.serialize(item), "ConditionExpression": NEW}}


def put_ops(table: str, items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``TransactWriteItems`` entries that accept ``items``: each record put only if new, in
    order, so a cancellation reason's index names the event. Nothing else: the stream queues
    them."""
    return [put_new(table, i) for i in items]


def enqueue(
    table: str,
    event: CloudEvent,
    *,
    tenant_id: str | None,
    kind: Kind,
    nats_pending: bool | None = None,
) -> bool:
    """Accept ``event`` into the outbox once (one conditional ``PutItem``). False if an event
    with its (source, id) is there."""
    del nats_pending
    item = outbox_item(event, tenant_id=tenant_id, kind=kind)
    return dynamo.put_new(table, item)


def get_event(table: str, pk: str) -> dict[str, Any] | None:
    return dynamo.get(table, key(pk))
