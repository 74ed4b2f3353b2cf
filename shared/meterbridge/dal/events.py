"""Ingest's writes to the events table: find stored ids, then store new events with counters.

Budget (issue 4): at most 30 DynamoDB requests per 1,000 new events. One consistent
``BatchGetItem`` per 100 ids finds the stored ones; one ``TransactWriteItems`` per chunk stores
up to 100 items, each outbox put conditional on the event being new, together with the
chunk's counter updates, so an event is stored and counted in one atomic step or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from meterbridge.dal import dynamo
from meterbridge.dal.outbox import EVENT_SK

BATCH_GET_MAX = 100
TRANSACT_MAX = 100


def stored_keys(table: str, pks: Sequence[str]) -> set[str]:
    """Which of ``pks`` already exist (strongly consistent)."""
    found: set[str] = set()
    for start in range(0, len(pks), BATCH_GET_MAX):
        keys = [
            dynamo.serialize({"pk": pk, "sk": EVENT_SK})
            for pk in pks[start : start + BATCH_GET_MAX]
        ]
        request: dict[str, Any] = {
            table: {"Keys": keys, "ConsistentRead": True, "ProjectionExpression": "pk"}
        }
        attempts = 0
        while request:
            try:
                resp = dynamo.client().batch_get_item(RequestItems=request)
            except Exception as exc:
                if dynamo.is_client_error(exc):
                    raise dynamo.translate(exc, "read events") from exc
                raise
            for item in resp.get("Responses", {}).get(table, []):
                found.add(item["pk"]["S"])
            request = resp.get("UnprocessedKeys") or {}
            attempts += 1
            if request and attempts > 8:
                from meterbridge.errors import StorageUnavailable

                raise StorageUnavailable(
                    "storage is busy, retry the request", headers={"Retry-After": "1"}
                )
    return found


@dataclass
class CounterUpdate:
    """``ADD used :n`` on one counter item, conditional on a cap when the plan has a hard limit."""

    table: str
    key: dict[str, str]
    amount: int
    cap: int | None = None

    def transact_item(self) -> dict[str, Any]:
        update: dict[str, Any] = {
            "TableName": self.table,
            "Key": dynamo.serialize(self.key),
            "UpdateExpression": "ADD #u :n",
            "ExpressionAttributeNames": {"#u": "used"},
            "ExpressionAttributeValues": dynamo.serialize({":n": self.amount}),
        }
        if self.cap is not None:
            update["ConditionExpression"] = "attribute_not_exists(#u) OR #u <= :room"
            update["ExpressionAttributeValues"] = dynamo.serialize(
                {":n": self.amount, ":room": self.cap - self.amount}
            )
        return {"Update": update}


@dataclass
class ChunkOutcome:
    written: bool
    duplicate_pks: set[str] = field(default_factory=set)
    over_cap: bool = False


def write_chunk(
    table: str, items: Sequence[dict[str, Any]], counters: Sequence[CounterUpdate]
) -> ChunkOutcome:
    """Store ``items`` (new events only) and apply ``counters`` in one transaction.

    On cancellation, reports which items were stored meanwhile by a concurrent request and
    whether a capped counter refused the amount; nothing of the chunk is written then.
    """
    transact = [
        {
            "Put": {
                "TableName": table,
                "Item": dynamo.serialize(item),
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }
        for item in items
    ] + [c.transact_item() for c in counters]
    if len(transact) > TRANSACT_MAX:
        raise ValueError("a chunk holds at most 100 items with its counters")
    try:
        dynamo.client().transact_write_items(TransactItems=transact)
        return ChunkOutcome(written=True)
    except Exception as exc:
        if dynamo.error_code(exc) != "TransactionCanceledException":
            if dynamo.is_client_error(exc):
                raise dynamo.translate(exc, "store events") from exc
            raise
        reasons = getattr(exc, "response", {}).get("CancellationReasons", [])
        outcome = ChunkOutcome(written=False)
        throttled = False
        for index, reason in enumerate(reasons):
            code = reason.get("Code")
            if code == "ConditionalCheckFailed":
                if index < len(items):
                    outcome.duplicate_pks.add(items[index]["pk"])
                else:
                    outcome.over_cap = True
            elif code not in (None, "None"):
                throttled = True
        if throttled and not outcome.duplicate_pks and not outcome.over_cap:
            raise dynamo.translate(exc, "store events") from exc
        return outcome


def mark_for_republish(table: str, pks: Sequence[str]) -> None:
    """NATS did not take these events: put them in the ``republish`` index for the flush."""
    from meterbridge.dal.outbox import shard_of_pk

    for pk in pks:
        dynamo.update(
            table,
            {"pk": pk, "sk": EVENT_SK},
            set_="SET republish_shard = :s",
            condition="attribute_exists(pk)",
            vals={":s": shard_of_pk(pk)},
            return_new=False,
        )
