"""The outbox: every CloudEvent meterbridge must deliver (to OpenMeter, and to NATS).

Two kinds of item in the events table (docs/flush.md, docs/data-model.md):

- The **event record**, one per CloudEvent, keyed by its (source, id), which is also the dedupe
  key: ``pk = "<source>#<id>"``, ``sk = "EVENT"``. It holds the event, ``outbox_at``
  (``<accepted_at>#<id>``, the order key of the sparse indexes), ``republish_shard`` while it
  waits for NATS (the ``republish`` index), ``dead`` once OpenMeter rejected it (the
  ``deadletters`` index), and ``expires_at``: the dedupe window, 45 days from acceptance.
- The **segment**, one per write that accepted events (an ingest transaction, one webhook, one
  tenant change): ``pk = "SEG#<uuid>"``, ``sk = "SEGMENT"``. It carries those events to
  OpenMeter (``events``: their JSON, one per line, ready to send), sits in the sparse ``outbox``
  index (``outbox_shard``/``outbox_at``) while pending, and is what the flush claims, leases and
  marks sent: two conditional writes per segment (up to 98 events), not per event.

Both are written in the same ``TransactWriteItems`` (``put_ops``): the event records
conditional on being new, the segment with them, so an event is in the outbox exactly when it
was accepted. Writers add items; only the flush removes a segment from the outbox index, with
conditional updates.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
import uuid
import zlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from meterbridge.bus.subjects import nats_msg_id
from meterbridge.dal import dynamo
from meterbridge.dal.dynamo import TRANSACT_MAX
from meterbridge.errors import ConditionFailed, StorageUnavailable
from meterbridge.models.cloudevent import CloudEvent, Kind, now_rfc3339

OUTBOX_SHARDS = 8
OUTBOX_INDEX = "outbox"
REPUBLISH_INDEX = "republish"
DEADLETTER_INDEX = "deadletters"
EVENT_SK = "EVENT"
SEGMENT_SK = "SEGMENT"
SEGMENT_PREFIX = "SEG#"
# A segment stays well inside DynamoDB's 400 KB item limit; its events' records hold the same
# JSON, so one ingest transaction stays far below the 4 MB request limit too.
SEGMENT_MAX_BYTES = 300_000
# Dedupe records outlive the 35-day late-event window with margin: a duplicate of any event
# ingest may still accept finds its record (docs/flush.md).
DEDUPE_RETENTION_S = 45 * 24 * 3600
# A sent segment is only a delivery record: kept a week for operators, then TTL-deleted.
SENT_SEGMENT_RETENTION_S = 7 * 24 * 3600
_NEW = "attribute_not_exists(pk)"


def event_pk(source: str, event_id: str) -> str:
    return nats_msg_id(source, event_id)


def shard_of_pk(pk: str) -> str:
    """The shard of an item key (an event record's or a segment's)."""
    return str(zlib.crc32(pk.encode()) % OUTBOX_SHARDS)


def shard_of(source: str, event_id: str) -> str:
    return shard_of_pk(event_pk(source, event_id))


def _epoch_s(rfc3339: str) -> int:
    return int(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp())


def outbox_item(
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
        from meterbridge.settings import get_settings

        nats_pending = get_settings().nats_enabled
    at = accepted_at or now_rfc3339()
    item: dict[str, Any] = {
        "pk": event_pk(event.source, event.id),
        "sk": EVENT_SK,
        "tenant_id": tenant_id,
        "kind": kind,
        "event_type": event.type,
        "event": json.dumps(event.wire(), separators=(",", ":")),
        "status": "accepted",
        "accepted_at": at,
        "outbox_at": f"{at}#{event.id}",
        "expires_at": _epoch_s(at) + DEDUPE_RETENTION_S,
        "attempts": 0,
    }
    if nats_pending:
        item["republish_shard"] = shard_of(event.source, event.id)
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


def put_ops(table: str, items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``TransactWriteItems`` entries that accept ``items``: each event record put only if new
    (in order, so a cancellation reason's index names the event), then their segment."""
    records, segment = segment_for(items)
    return [_put_new(table, i) for i in [*records, segment]]


def _put_new(table: str, item: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "Put": {"TableName": table, "Item": dynamo.serialize(item), "ConditionExpression": _NEW}
    }


def enqueue(
    table: str,
    event: CloudEvent,
    *,
    tenant_id: str | None,
    kind: Kind,
    nats_pending: bool | None = None,
) -> bool:
    """Accept ``event`` into the outbox once. False if an event with its (source, id) is there."""
    item = outbox_item(event, tenant_id=tenant_id, kind=kind, nats_pending=nats_pending)
    try:
        dynamo.client().transact_write_items(TransactItems=put_ops(table, [item]))  # type: ignore[arg-type]
    except Exception as exc:
        reasons = dynamo.cancellation_reasons(exc)
        if reasons and reasons[0] == "ConditionalCheckFailed":
            return False
        if dynamo.is_client_error(exc):
            raise dynamo.translate(exc, f"enqueue {table}") from exc
        raise
    return True


def mark_published(table: str, source: str, event_id: str) -> bool:
    """NATS acknowledged the event: drop it from the republish index. False if its record is
    gone (its dedupe window ended): nothing is left to mark."""
    return dynamo.update_if(
        table,
        {"pk": event_pk(source, event_id), "sk": EVENT_SK},
        set_="REMOVE republish_shard",
        condition="attribute_exists(pk)",
    )


# -- the flush: segment leases, delivery marks, dead letters (issue 5) -----------------------
#
# A pending segment is claimed by one flush run at a time: a conditional update on the base
# table (the GSI is eventually consistent, so it is only a hint) sets ``lease_owner`` (the
# run id) and ``lease_until`` (epoch ms). Every later write by that run is conditioned on
# ``lease_owner = :me``, so a run whose lease expired and was taken over cannot mark the
# segment: its events are marked exactly once. The flush claims, marks and releases in groups
# (``claim_many``, ``mark_sent_many``, ``release_many``: one ``TransactWriteItems`` of up to
# 100 conditional updates, retried without the items whose condition failed).

DEAD = "DEAD"
_ERROR_MAX = 2000

_PENDING_UNLEASED = (
    "#st = :pending AND attribute_exists(outbox_shard) "
    "AND (attribute_not_exists(lease_until) OR lease_until < :now)"
)


def _key(pk: str) -> dict[str, str]:
    return {"pk": pk, "sk": EVENT_SK}


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
    from concurrent.futures import ThreadPoolExecutor

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


def dead_letter(table: str, pk: str, *, error: str, dead_at: str) -> bool:
    """OpenMeter rejected this one event: park its record in the ``deadletters`` index with
    the error (no TTL while dead). False if it is dead already (a repeat after a crash)."""
    return dynamo.update_if(
        table,
        _key(pk),
        set_=(
            "SET #st = :dead, dead = :dead_key, dead_at = :at, #err = :err ADD attempts :one "
            "REMOVE expires_at"
        ),
        condition="attribute_exists(pk) AND attribute_not_exists(dead)",
        names={"#st": "status", "#err": "error"},
        vals={
            ":dead": "dead",
            ":dead_key": DEAD,
            ":at": dead_at,
            ":err": error[:_ERROR_MAX],
            ":one": 1,
        },
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


# -- shard leases (in the idempotency table) -------------------------------------------------
#
# A run works a shard only while it holds that shard's lease (one conditional write per shard,
# renewed per page), so overlapping runs drain different shards and their claims rarely
# collide. The lease is an optimisation: the per-event claims above still decide who sends.

SHARD_LEASE_SK = "FLUSH_LEASE"
_SHARD_LEASE_TTL_S = 24 * 3600


def _shard_key(events_table: str, shard: str) -> dict[str, str]:
    return {"pk": f"FLUSH#{events_table}#{shard}", "sk": SHARD_LEASE_SK}


def acquire_shard(
    lease_table: str, events_table: str, shard: str, *, owner: str, now_ms: int, lease_ms: int
) -> bool:
    """Take (or renew) the lease on ``shard`` until ``now_ms + lease_ms``. False if another
    run holds it."""
    return dynamo.update_if(
        lease_table,
        _shard_key(events_table, shard),
        set_="SET lease_owner = :me, lease_until = :until, expires_at = :exp",
        condition="attribute_not_exists(pk) OR lease_until < :now OR lease_owner = :me",
        vals={
            ":me": owner,
            ":until": now_ms + lease_ms,
            ":now": now_ms,
            ":exp": now_ms // 1000 + _SHARD_LEASE_TTL_S,
        },
    )


def release_shard(lease_table: str, events_table: str, shard: str, *, owner: str) -> None:
    """Give the shard back (a no-op if the lease passed to another run)."""
    with contextlib.suppress(ConditionFailed):
        dynamo.delete(
            lease_table,
            _shard_key(events_table, shard),
            condition="lease_owner = :me",
            vals={":me": owner},
        )


def list_dead_letters(
    table: str, *, limit: int, start_key: dict[str, Any] | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """One page of dead letters, oldest first."""
    return dynamo.query(
        table,
        index=DEADLETTER_INDEX,
        key_condition="dead = :d",
        vals={":d": DEAD},
        limit=limit,
        start_key=start_key,
    )


def get_event(table: str, pk: str) -> dict[str, Any] | None:
    return dynamo.get(table, _key(pk))


def retry_dead_letter(table: str, pk: str, *, retried_at: str) -> bool:
    """Put a dead letter back in the outbox (same id and source) in a new segment of its own.
    False if it is not dead (unknown, already retried)."""
    item = get_event(table, pk)
    if item is None or item.get("dead") != DEAD:
        return False
    record = {**item, "accepted_at": retried_at}
    _, segment = segment_for([record])
    # ``error`` stays as the last rejection's reason until the next outcome.
    retry: dict[str, Any] = {
        "TableName": table,
        "Key": dynamo.serialize(_key(pk)),
        "UpdateExpression": (
            "SET #st = :retried, retried_at = :at, #seg = :seg, expires_at = :exp REMOVE dead"
        ),
        "ConditionExpression": "#st = :dead AND attribute_exists(dead)",
        "ExpressionAttributeNames": {"#st": "status", "#seg": "segment"},
        "ExpressionAttributeValues": dynamo.values(
            {
                ":retried": "retried",
                ":at": retried_at,
                ":seg": segment["pk"],
                ":exp": _epoch_s(retried_at) + DEDUPE_RETENTION_S,
                ":dead": "dead",
            }
        ),
    }
    ops: list[Any] = [{"Update": retry}, _put_new(table, segment)]
    try:
        dynamo.client().transact_write_items(TransactItems=ops)
    except Exception as exc:
        if dynamo.cancellation_reasons(exc) is not None:
            return False  # retried or delivered meanwhile
        if dynamo.is_client_error(exc):
            raise dynamo.translate(exc, f"retry dead letter {table}") from exc
        raise
    return True


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
