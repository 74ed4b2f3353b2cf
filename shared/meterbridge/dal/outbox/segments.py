"""The segment layout of the outbox (before issue 16), kept to drain a stack that upgrades.

Before the stream, every write that accepted events wrote, in one ``TransactWriteItems``, the
event records (each with ``segment``: its segment's key) and one **segment**,
``SEG#<uuid>``/``SEGMENT``, carrying those events to OpenMeter in the sparse ``outbox`` index
(``outbox_shard``/``outbox_at``) while pending. The flush still claims, leases and marks such
segments (``claim_many``, ``mark_sent_many``, ``release_many``) until none is left; nothing
new writes them. ``legacy_item`` and ``legacy_put_ops`` are the old writers' items, for the
migration test. The stream reader skips records that carry ``segment``: their segments
deliver them, so nothing is sent twice across the upgrade.
"""

from __future__ import annotations

import json
import random
import time
import uuid
import zlib
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from meterbridge.dal import dynamo
from meterbridge.dal.dynamo import TRANSACT_MAX
from meterbridge.dal.outbox.records import DEDUPE_RETENTION_S, epoch_s, event_pk
from meterbridge.errors import StorageUnavailable
from meterbridge.models.cloudevent import CloudEvent, Kind, now_rfc3339
from meterbridge.settings import get_settings

OUTBOX_SHARDS = 8
OUTBOX_INDEX = "outbox"
SEGMENT_SK = "SEGMENT"
SEGMENT_PREFIX = "SEG#"
SEGMENT_MAX_BYTES = 300_000
# A sent segment is only a delivery record: kept a week for operators, then TTL-deleted.
SENT_SEGMENT_RETENTION_S = 7 * 24 * 3600
_NEW = "attribute_not_exists(pk)"
_ERROR_MAX = 2000


def shard_of_pk(pk: str) -> str:
    """The shard of an item key (an event record's or a segment's)."""
    return str(zlib.crc32(pk.encode()) % OUTBOX_SHARDS)


def legacy_item(
    event: CloudEvent,
    *,
    tenant_id: str | None,
    kind: Kind,
    nats_pending: bool | None = None,
    accepted_at: str | None = None,
) -> dict[str, Any]:
    """The event record for ``event`` (plain dict); ``put_ops`` writes it with its segment.

    ``nats_pending`` defaults to whether NATS is enabled: with NATS off, nothing waits for it.
    """
    if nats_pending is None:
        nats_pending = get_settings().nats_enabled
    at = accepted_at or now_rfc3339()
    item: dict[str, Any] = {
        "pk": event_pk(event.source, event.id),
        "sk": "EVENT",
        "tenant_id": tenant_id,
        "kind": kind,
        "event_type": event.type,
        "event": json.dumps(event.wire(), separators=(",", ":")),
        "status": "accepted",
        "accepted_at": at,
        "outbox_at": f"{at}#{event.id}",
        "expires_at": epoch_s(at) + DEDUPE_RETENTION_S,
        "attempts": 0,
    }
    if nats_pending:
        item["republish_shard"] = str(zlib.crc32(event_pk(event.source, event.id).encode()) % 8)
    return item


def segment_for(
    items: Sequence[dict[str, Any]], *, segment_id: str | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The segment that carries the events of ``items`` (event records) to OpenMeter, and the
    records linked to it (``segment`` = its key)."""
    if not items:
        raise ValueError("a segment carries at least one event")
    seg_id = segment_id or uuid.uuid4().hex
    pk = SEGMENT_PREFIX + seg_id
    first = items[0]
    at = str(first["accepted_at"])
    segment: dict[str, Any] = {
        "pk": pk,
        "sk": SEGMENT_SK,
        "status": "pending",
        # Compact JSON has no raw newline, so one event per line splits back exactly.
        "events": "\n".join(str(i["event"]) for i in items),
        "count": len(items),
        "tenant_id": first.get("tenant_id"),
        "kind": first.get("kind"),
        "accepted_at": at,
        "outbox_shard": shard_of_pk(pk),
        "outbox_at": f"{at}#{seg_id}",
        "attempts": 0,
    }
    return [{**i, "segment": pk} for i in items], segment


def segment_events(segment: Mapping[str, Any]) -> list[str]:
    """A segment's events, each the CloudEvent's JSON as stored."""
    return str(segment["events"]).split("\n")


def legacy_put_ops(table: str, items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``TransactWriteItems`` entries that accept ``items``: each event record put only if new
    (in order, so a cancellation reason's index names the event), then their segment."""
    records, segment = segment_for(items)
    return [_put_new(table, i) for i in [*records, segment]]


def _put_new(table: str, item: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "Put": {"TableName": table, "Item": dynamo.serialize(item), "ConditionExpression": _NEW}
    }


# -- the flush: segment leases, delivery marks, dead letters (issue 5) -----------------------
#
# A pending segment is claimed by one flush run at a time: a conditional update on the base
# table (the GSI is eventually consistent, so it is only a hint) sets ``lease_owner`` (the
# run id) and ``lease_until`` (epoch ms). Every later write by that run is conditioned on
# ``lease_owner = :me``, so a run whose lease expired and was taken over cannot mark the
# segment: its events are marked exactly once. The flush claims, marks and releases in groups
# (``claim_many``, ``mark_sent_many``, ``release_many``: one ``TransactWriteItems`` of up to
# 100 conditional updates, retried without the items whose condition failed).


_PENDING_UNLEASED = (
    "#st = :pending AND attribute_exists(outbox_shard) "
    "AND (attribute_not_exists(lease_until) OR lease_until < :now)"
)


def _segment_key(pk: str) -> dict[str, str]:
    return {"pk": pk, "sk": SEGMENT_SK}


# What the flush reads from a pending page: the events, and what it needs to claim them.
FLUSH_ATTRIBUTES = ("pk", "events", "count", "lease_until", "tenant_id")


def pending_page(
    table: str,
    shard: str,
    *,
    limit: int,
    start_key: dict[str, Any] | None = None,
    attributes: Sequence[str] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """One page of segments waiting for OpenMeter in ``shard``, oldest first (GSI: a hint).

    ``attributes`` limits what each item carries (``FLUSH_ATTRIBUTES`` for the flush)."""
    if not attributes:
        return dynamo.query(
            table,
            index=OUTBOX_INDEX,
            key_condition="outbox_shard = :s",
            vals={":s": shard},
            limit=limit,
            start_key=start_key,
        )
    names = {f"#a{i}": name for i, name in enumerate(attributes)}
    kwargs: dict[str, Any] = {
        "TableName": table,
        "IndexName": OUTBOX_INDEX,
        "KeyConditionExpression": "outbox_shard = :s",
        "ExpressionAttributeValues": dynamo.values({":s": shard}),
        "ExpressionAttributeNames": names,
        "ProjectionExpression": ", ".join(names),
        "Limit": limit,
    }
    if start_key:
        kwargs["ExclusiveStartKey"] = dynamo.serialize(start_key)
    resp = dynamo.call("query", f"query {table}", **kwargs)
    last = resp.get("LastEvaluatedKey")
    items = [dynamo.deserialize(i) for i in resp.get("Items", [])]
    return items, (dynamo.deserialize(last) if last else None)


def count_pending(table: str) -> int:
    """Events waiting for OpenMeter: the ``count`` of every pending segment, over every shard
    (only that attribute is read; the shards are counted in parallel)."""

    with ThreadPoolExecutor(OUTBOX_SHARDS, thread_name_prefix="outbox-count") as pool:
        return sum(pool.map(lambda shard: _count_shard(table, str(shard)), range(OUTBOX_SHARDS)))


def _count_shard(table: str, shard: str) -> int:
    total = 0
    start: dict[str, Any] | None = None
    while True:
        kwargs: dict[str, Any] = {
            "TableName": table,
            "IndexName": OUTBOX_INDEX,
            "KeyConditionExpression": "outbox_shard = :s",
            "ExpressionAttributeValues": dynamo.values({":s": shard}),
            "ExpressionAttributeNames": {"#c": "count"},
            "ProjectionExpression": "#c",
        }
        if start:
            kwargs["ExclusiveStartKey"] = dynamo.serialize(start)
        resp = dynamo.call("query", f"count {table}", **kwargs)
        total += sum(int(i.get("count", {}).get("N", 0)) for i in resp.get("Items", []))
        last = resp.get("LastEvaluatedKey")
        if not last:
            return total
        start = dynamo.deserialize(last)


def claim(table: str, pk: str, *, owner: str, now_ms: int, lease_ms: int) -> bool:
    """Lease one pending segment to ``owner`` until ``now_ms + lease_ms``. False if not
    claimable (already sent, or leased by a live run)."""
    return dynamo.update_if(
        table,
        _segment_key(pk),
        set_="SET lease_owner = :me, lease_until = :until",
        condition=_PENDING_UNLEASED,
        names={"#st": "status"},
        vals={":me": owner, ":until": now_ms + lease_ms, ":now": now_ms, ":pending": "pending"},
    )


# -- the same writes in groups: TransactWriteItems of up to 100 ------------------------------
#
# A transaction is used as a batch of independent conditional updates, not for atomicity: when
# DynamoDB cancels it, ``CancellationReasons`` (one per item, in order) names the items whose
# condition failed; they are dropped (another run holds them, or they are already done) and
# the others are sent again. Nothing was written by a cancelled transaction, so a retry is
# exact. botocore fills ``ClientRequestToken`` once per call, so its own retries of a request
# whose answer was lost are idempotent (DynamoDB replays the first outcome).

_TRANSACT_ATTEMPTS = 6
_DROP = "ConditionalCheckFailed"
_CONFLICT = "TransactionConflict"
_BUSY = frozenset({"ThrottlingError", "ProvisionedThroughputExceeded", "TransactionConflict"})


def _update_entry(
    table: str,
    pk: str,
    update: str,
    condition: str,
    names: Mapping[str, str] | None,
    vals: dict[str, Any],
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "TableName": table,
        "Key": {"pk": {"S": pk}, "sk": {"S": SEGMENT_SK}},
        "UpdateExpression": update,
        "ConditionExpression": condition,
        "ExpressionAttributeValues": vals,
    }
    if names:
        entry["ExpressionAttributeNames"] = dict(names)
    return {"Update": entry}


def transact_update(
    table: str,
    pks: Iterable[str],
    *,
    update: str,
    condition: str,
    vals: Mapping[str, Any],
    names: Mapping[str, str] | None = None,
    drop_conflicts: bool = True,
    what: str = "update",
) -> set[str]:
    """Apply one conditional update to each segment in ``pks``, ``TRANSACT_MAX`` a request.

    Returns the pks whose condition held (and were written). Items failing their condition
    are left out; an item another transaction is writing at the same moment is left out too
    when ``drop_conflicts`` (a claim can skip it), else retried (a mark must land). Throttling
    is retried with jittered backoff; ``StorageUnavailable`` when it persists.
    """
    serialized_vals = dynamo.values(vals)
    unique = list(dict.fromkeys(pks))  # a transaction may not name one item twice
    written: set[str] = set()
    for start in range(0, len(unique), TRANSACT_MAX):
        todo = unique[start : start + TRANSACT_MAX]
        attempt = 0
        while todo:
            attempt += 1
            items = [
                _update_entry(table, pk, update, condition, names, serialized_vals) for pk in todo
            ]
            try:
                dynamo.client().transact_write_items(TransactItems=items)  # type: ignore[arg-type]
            except Exception as exc:
                if not dynamo.is_client_error(exc):
                    raise
                code = dynamo.error_code(exc)
                reasons = dynamo.cancellation_reasons(exc)
                if reasons is not None:
                    failed = {
                        pk
                        for pk, reason in zip(todo, reasons, strict=False)
                        if reason == _DROP or (drop_conflicts and reason == _CONFLICT)
                    }
                    if failed:
                        todo = [pk for pk in todo if pk not in failed]
                        continue
                    if not set(reasons) & _BUSY:
                        raise StorageUnavailable(
                            f"{what} {table}: transaction cancelled ({sorted(set(reasons))})"
                        ) from exc
                elif (
                    code not in dynamo.THROTTLING_CODES and code != "TransactionInProgressException"
                ):
                    raise dynamo.translate(exc, f"{what} {table}") from exc
                if attempt >= _TRANSACT_ATTEMPTS:
                    raise StorageUnavailable(
                        f"{what} {table}: storage is busy, retry the request",
                        headers={"Retry-After": "1"},
                    ) from exc
                time.sleep(random.uniform(0, min(1.0, 0.02 * 2**attempt)))
                continue
            written.update(todo)
            todo = []
    return written


def claim_many(
    table: str, pks: Iterable[str], *, owner: str, now_ms: int, lease_ms: int
) -> set[str]:
    """``claim`` for many segments at once; returns the pks now leased to ``owner``."""
    return transact_update(
        table,
        pks,
        update="SET lease_owner = :me, lease_until = :until",
        condition=_PENDING_UNLEASED,
        names={"#st": "status"},
        vals={":me": owner, ":until": now_ms + lease_ms, ":now": now_ms, ":pending": "pending"},
        what="claim",
    )


def mark_sent_many(
    table: str, pks: Iterable[str], *, owner: str, sent_at: str, now_s: int
) -> set[str]:
    """Mark segments sent once OpenMeter acknowledged their events; returns the pks marked
    (the others' leases were lost, or they were sent already)."""
    return transact_update(
        table,
        pks,
        update=(
            "SET #st = :sent, sent_at = :at, sent_by = :me, expires_at = :exp "
            "REMOVE outbox_shard, lease_owner, lease_until"
        ),
        condition="lease_owner = :me AND #st = :pending",
        names={"#st": "status"},
        vals={
            ":sent": "sent",
            ":at": sent_at,
            ":exp": now_s + SENT_SEGMENT_RETENTION_S,
            ":me": owner,
            ":pending": "pending",
        },
        drop_conflicts=False,
        what="mark sent",
    )


def marked_by(table: str, pks: Iterable[str], *, owner: str) -> set[str]:
    """Which of ``pks`` ``owner`` marked sent (consistent read).

    After a mark whose answer was lost (a timeout), the writes may still have been applied:
    this tells the run what it really marked, so it counts them and never sends them again.
    """
    keys = list(pks)
    found: set[str] = set()
    for start in range(0, len(keys), 100):
        request: dict[str, Any] = {
            table: {
                "Keys": [dynamo.serialize(_segment_key(pk)) for pk in keys[start : start + 100]],
                "ConsistentRead": True,
                "ProjectionExpression": "pk, #st, sent_by",
                "ExpressionAttributeNames": {"#st": "status"},
            }
        }
        for _ in range(8):
            try:
                resp = dynamo.client().batch_get_item(RequestItems=request)
            except Exception as exc:
                if dynamo.is_client_error(exc):
                    raise dynamo.translate(exc, f"read {table}") from exc
                raise
            for raw in resp.get("Responses", {}).get(table, []):
                item = dynamo.deserialize(raw)
                if item.get("status") == "sent" and item.get("sent_by") == owner:
                    found.add(item["pk"])
            request = resp.get("UnprocessedKeys") or {}
            if not request:
                break
    return found


def release_many(table: str, pks: Iterable[str], *, owner: str, error: str) -> set[str]:
    """Give claimed segments back (not delivered); returns the pks released."""
    return transact_update(
        table,
        pks,
        update="SET last_error = :err ADD attempts :one REMOVE lease_owner, lease_until",
        condition="lease_owner = :me",
        vals={":err": error[:_ERROR_MAX], ":one": 1, ":me": owner},
        drop_conflicts=False,
        what="release",
    )


def any_pending(table: str, shard: str) -> bool:
    """Whether ``shard`` of the segment layout still holds a pending segment (one query of one
    key: 0.5 RRU when empty)."""
    items, _ = pending_page(table, shard, limit=1, attributes=("pk",))
    return bool(items)


def oldest_pending(table: str) -> dict[str, Any] | None:
    """The pending segment accepted first, over the shards (one one-item query each)."""
    oldest: dict[str, Any] | None = None
    for shard in range(OUTBOX_SHARDS):
        items, _ = dynamo.query(
            table,
            index=OUTBOX_INDEX,
            key_condition="outbox_shard = :s",
            vals={":s": str(shard)},
            limit=1,
        )
        if items and (oldest is None or items[0]["outbox_at"] < oldest["outbox_at"]):
            oldest = items[0]
    return oldest
