"""NATS republish markers: written only when a publish failed (docs/flush.md).

On the happy path ingest publishes after its commit and writes nothing more. When JetStream
did not acknowledge an event, its record gets ``republish_shard`` (and ``outbox_at``, the
index's sort key), which puts it in the sparse ``republish`` index; the flush republishes it
with the same ``Nats-Msg-Id`` and removes the marker.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Any

from meterbridge.dal import dynamo
from meterbridge.dal.outbox.records import event_pk, key

REPUBLISH_INDEX = "republish"
REPUBLISH_SHARDS = 8


def shard_of_pk(pk: str) -> str:
    return str(zlib.crc32(pk.encode()) % REPUBLISH_SHARDS)


def shard_of(source: str, event_id: str) -> str:
    return shard_of_pk(event_pk(source, event_id))


def mark_pending(table: str, pks: Iterable[str], *, accepted_at: str) -> int:
    """NATS did not acknowledge these events: queue them for the flush's republish. Returns
    how many were marked (a record gone since is skipped). Raises nothing for a missing one."""
    marked = 0
    for pk in pks:
        if dynamo.update_if(
            table,
            key(pk),
            set_="SET republish_shard = :s, outbox_at = if_not_exists(outbox_at, :at)",
            condition="attribute_exists(pk)",
            vals={":s": shard_of_pk(pk), ":at": f"{accepted_at}#{pk}"},
        ):
            marked += 1
    return marked


def mark_published(table: str, source: str, event_id: str) -> bool:
    """NATS acknowledged a marked event: drop it from the republish index. False if its record
    is gone (its dedupe window ended) or carries no marker."""
    return dynamo.update_if(
        table,
        key(event_pk(source, event_id)),
        set_="REMOVE republish_shard",
        condition="attribute_exists(republish_shard)",
    )


def republish_page(
    table: str, shard: str, *, limit: int, start_key: dict[str, Any] | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """One page of events NATS has not acknowledged yet in ``shard``."""
    return dynamo.query(
        table,
        index=REPUBLISH_INDEX,
        key_condition="republish_shard = :s",
        vals={":s": shard},
        limit=limit,
        start_key=start_key,
    )
