"""The outbox: every CloudEvent meterbridge must deliver (to OpenMeter, and to NATS).

One item per event in the events table, keyed by the CloudEvent's (source, id), which is also
the dedupe key: ``pk = "<source>#<id>"``, ``sk = "EVENT"``. While an event waits for OpenMeter
it carries ``outbox_shard``/``outbox_at`` (the sparse ``outbox`` index); while it waits for
NATS it carries ``republish_shard`` (the sparse ``republish`` index); a dead letter carries
``dead`` (the sparse ``deadletters`` index). Writers add items; only the flush removes those
attributes, with conditional updates.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from meterbridge.dal import dynamo
from meterbridge.models.cloudevent import CloudEvent, Kind, now_rfc3339

OUTBOX_SHARDS = 8
OUTBOX_INDEX = "outbox"
REPUBLISH_INDEX = "republish"
DEADLETTER_INDEX = "deadletters"
EVENT_SK = "EVENT"


def event_pk(source: str, event_id: str) -> str:
    return f"{source}#{event_id}"


def shard_of(source: str, event_id: str) -> str:
    return str(zlib.crc32(f"{source}#{event_id}".encode()) % OUTBOX_SHARDS)


def outbox_item(
    event: CloudEvent,
    *,
    tenant_id: str | None,
    kind: Kind,
    nats_pending: bool = True,
    accepted_at: str | None = None,
) -> dict[str, Any]:
    """The outbox item for ``event`` (plain dict; ``dynamo.serialize`` before writing)."""
    at = accepted_at or now_rfc3339()
    shard = shard_of(event.source, event.id)
    item: dict[str, Any] = {
        "pk": event_pk(event.source, event.id),
        "sk": EVENT_SK,
        "tenant_id": tenant_id,
        "kind": kind,
        "event_type": event.type,
        "event": json.dumps(event.wire(), separators=(",", ":")),
        "status": "pending",
        "accepted_at": at,
        "outbox_shard": shard,
        "outbox_at": f"{at}#{event.id}",
        "attempts": 0,
    }
    if nats_pending:
        item["republish_shard"] = shard
    return item


def enqueue(
    table: str, event: CloudEvent, *, tenant_id: str | None, kind: Kind, nats_pending: bool = True
) -> bool:
    """Put ``event`` in the outbox once. False if an event with its (source, id) is there."""
    return dynamo.put_new(
        table, outbox_item(event, tenant_id=tenant_id, kind=kind, nats_pending=nats_pending)
    )


def mark_published(table: str, source: str, event_id: str) -> None:
    """NATS acknowledged the event: drop it from the republish index."""
    dynamo.update(
        table,
        {"pk": event_pk(source, event_id), "sk": EVENT_SK},
        set_="REMOVE republish_shard",
        condition="attribute_exists(pk)",
        return_new=False,
    )
