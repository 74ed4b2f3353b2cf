"""Dead letters: event records OpenMeter rejected, in the sparse ``deadletters`` index.

The flush dead-letters a record with one conditional ``UpdateItem`` (``dead = "DEAD"``, the
error, ``dead_at``, ``outbox_at`` as the index's sort key, TTL removed). A retry updates the
record back and puts a small **requeue** item, ``SEG#<uuid>``/``REQUEUE`` (the event's JSON,
``record`` = the record's key, 7-day TTL), in one transaction: its INSERT in the stream is what
queues the event for OpenMeter again, with the same id and source.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from meterbridge.dal import dynamo
from meterbridge.dal.outbox.records import DEDUPE_RETENTION_S, epoch_s, key
from meterbridge.dal.outbox.stream import REQUEUE_SK

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
