"""Dead letters: event records OpenMeter rejected, in the sparse ``deadletters`` index.

The flush dead-letters a record with one conditional ``UpdateItem`` (``dead = "DEAD"``, the
error, ``dead_at``, ``outbox_at`` as the index's sort key, TTL removed). A retry updates the
record back and puts a small **requeue** item, ``SEG#<uuid>``/``REQUEUE`` (the event's JSON,
``record`` = the record's key, 7-day TTL), in one transaction: its INSERT in the stream is what
queues the event for OpenMeter again, with the same id and source.
"""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from typing import Any

from meterbridge.dal import dynamo
from meterbridge.dal.outbox.records import DEDUPE_RETENTION_S, epoch_s, key
from meterbridge.dal.outbox.stream import REQUEUE_SK
from meterbridge.models.deadletter import DeadLetter, DeadLetterPage

DEADLETTER_INDEX = "deadletters"
DEAD = "DEAD"
_ERROR_MAX = 2000
REQUEUE_RETENTION_S = 7 * 24 * 3600


def dead_letter(table: str, pk: str, *, error: str, dead_at: str) -> bool:
    """OpenMeter rejected this one event: park its record in the ``deadletters`` index with
    the error (no TTL while dead). False if it is dead already (a repeat after a crash)."""
    return dynamo.update_if(
        table,
        key(pk),
        set_=(
            "SET #st = :dead, dead = :dead_key, dead_at = :at, #err = :err, "
            "outbox_at = if_not_exists(outbox_at, :order) ADD attempts :one REMOVE expires_at"
        ),
        condition="attribute_exists(pk) AND attribute_not_exists(dead)",
        names={"#st": "status", "#err": "error"},
        vals={
            ":dead": "dead",
            ":dead_key": DEAD,
            ":at": dead_at,
            ":order": f"{dead_at}#{pk}",
            ":err": error[:_ERROR_MAX],
            ":one": 1,
        },
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


def count_dead_letters(table: str) -> int:
    """Every dead letter (a ``Select=COUNT`` over the index): run once, when the ledger is
    seeded after an upgrade, never per flush run."""
    total, start = 0, None
    while True:
        kwargs: dict[str, Any] = {
            "TableName": table,
            "IndexName": DEADLETTER_INDEX,
            "KeyConditionExpression": "dead = :d",
            "ExpressionAttributeValues": dynamo.values({":d": DEAD}),
            "Select": "COUNT",
        }
        if start:
            kwargs["ExclusiveStartKey"] = start
        resp = dynamo.call("query", f"count dead letters {table}", **kwargs)
        total += int(resp.get("Count", 0))
        start = resp.get("LastEvaluatedKey")
        if not start:
            return total


def retry_dead_letter(table: str, pk: str, *, retried_at: str) -> bool:
    """Queue a dead letter for OpenMeter again (same id and source). False if it is not dead
    (unknown, already retried)."""
    item = dynamo.get(table, key(pk))
    if item is None or item.get("dead") != DEAD:
        return False
    wire = json.loads(str(item["event"]))
    requeue = {
        "pk": f"SEG#{uuid.uuid4().hex}",
        "sk": REQUEUE_SK,
        "record": pk,
        "events": json.dumps(wire, separators=(",", ":")),
        "count": 1,
        "tenant_id": item.get("tenant_id"),
        "kind": item.get("kind"),
        "accepted_at": retried_at,
        "expires_at": epoch_s(retried_at) + REQUEUE_RETENTION_S,
    }
    # ``error`` stays as the last rejection's reason until the next outcome.
    retry: dict[str, Any] = {
        "TableName": table,
        "Key": dynamo.serialize(key(pk)),
        "UpdateExpression": "SET #st = :retried, retried_at = :at, expires_at = :exp REMOVE dead",
        "ConditionExpression": "#st = :dead AND attribute_exists(dead)",
        "ExpressionAttributeNames": {"#st": "status"},
        "ExpressionAttributeValues": dynamo.values(
            {
                ":retried": "retried",
                ":at": retried_at,
                ":exp": epoch_s(retried_at) + DEDUPE_RETENTION_S,
                ":dead": "dead",
            }
        ),
    }
    put: dict[str, Any] = {
        "TableName": table,
        "Item": dynamo.serialize(requeue),
        "ConditionExpression": "attribute_not_exists(pk)",
    }
    try:
        ops: list[Any] = [{"Update": retry}, {"Put": put}]
        dynamo.client().transact_write_items(TransactItems=ops)
    except Exception as exc:
        if dynamo.cancellation_reasons(exc) is not None:
            return False  # retried or delivered meanwhile
        if dynamo.is_client_error(exc):
            raise dynamo.translate(exc, f"retry dead letter {table}") from exc
        raise
    return True


# -- as the admin API names them: an opaque id (the record's key, URL-safe base64) and an
# opaque cursor (the index's LastEvaluatedKey) ------------------------------------------------


class BadCursor(ValueError):
    """A cursor this listing did not hand out."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def dead_letter_id(pk: str) -> str:
    return _b64(pk.encode())


def _pk_of(dead_id: str) -> str | None:
    try:
        pk = _unb64(dead_id).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return pk if "#" in pk else None


def _model(item: dict[str, Any]) -> DeadLetter:
    event = json.loads(item["event"])
    error: Any = item.get("error")
    if isinstance(error, str):
        with contextlib.suppress(ValueError):
            error = json.loads(error)
    return DeadLetter(
        id=dead_letter_id(item["pk"]),
        source=event["source"],
        event_id=event["id"],
        tenant_id=item.get("tenant_id"),
        kind=item.get("kind"),
        type=item.get("event_type"),
        error=error,
        dead_at=item.get("dead_at"),
        attempts=int(item.get("attempts", 0)),
        event=event,
    )


def page(table: str, *, limit: int, cursor: str | None = None) -> DeadLetterPage:
    """One page of dead letters, oldest first; ``BadCursor`` for a cursor not handed out."""
    start = None
    if cursor:
        try:
            start = json.loads(_unb64(cursor))
            if not isinstance(start, dict):
                raise ValueError
        except ValueError as exc:
            raise BadCursor(cursor) from exc
    items, last = list_dead_letters(table, limit=limit, start_key=start)
    next_cursor = _b64(json.dumps(last, separators=(",", ":")).encode()) if last else None
    return DeadLetterPage(items=[_model(i) for i in items], next_cursor=next_cursor)


def find(table: str, dead_id: str) -> DeadLetter | None:
    """The event ``dead_id`` names (dead or not any more), None if it names none."""
    pk = _pk_of(dead_id)
    item = dynamo.get(table, key(pk)) if pk else None
    return None if item is None else _model(item)


def retry(table: str, dead_id: str, *, retried_at: str) -> bool:
    """``retry_dead_letter`` by the API's id; False if it names no dead letter."""
    pk = _pk_of(dead_id)
    return pk is not None and retry_dead_letter(table, pk, retried_at=retried_at)


def oldest_ids(table: str, *, limit: int) -> tuple[list[str], bool]:
    """The ids of up to ``limit`` dead letters, oldest first, and whether more are left."""
    items, last = list_dead_letters(table, limit=limit)
    return [dead_letter_id(i["pk"]) for i in items], last is not None


def canonical_id(dead_id: str) -> str | None:
    """``dead_id`` as the listing spells it, or None if it names no event record."""
    pk = _pk_of(dead_id)
    return None if pk is None else dead_letter_id(pk)
