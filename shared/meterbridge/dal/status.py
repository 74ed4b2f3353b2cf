"""Reads (and one write) behind ``meterbridge status`` and the flush's backlog gauges.

- The outbox backlog: the sparse ``outbox`` index of the events table, sorted by
  ``outbox_at`` (``<accepted_at>#<id>``) within each shard, so the oldest pending event is the
  minimum over the shards' first items: ``OUTBOX_SHARDS`` queries of one item each.
- Dead letters: a ``Select=COUNT`` query on the sparse ``deadletters`` index.
- The last flush result: one item ``FLUSH#last``/``RESULT`` in the idempotency table, written
  (overwritten) at the end of every flush run by ``put_last_flush``.
- Usage this period: the usage table's sharded counters ``<tenant>#<period>#<meter>``/
  ``SHARD#<n>``. There is no index by period, so this is a filtered ``Scan`` (operators run it
  by hand; it reads the whole table: docs/observability.md).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, NoReturn

from meterbridge.dal import dynamo, outbox

LAST_FLUSH_KEY = {"pk": "FLUSH#last", "sk": "RESULT"}
# Counter shards' numeric attribute (issue 4 writes it with ``ADD``).
COUNTER_ATTRS = ("count", "used", "value")


def _raise(exc: Exception, what: str) -> NoReturn:
    if dynamo.is_client_error(exc):
        raise dynamo.translate(exc, what) from exc
    raise exc


def oldest_pending(table: str) -> dict[str, Any] | None:
    """The pending event accepted first (``pk``, ``accepted_at``, ``tenant_id``), or None."""
    oldest: dict[str, Any] | None = None
    for shard in range(outbox.OUTBOX_SHARDS):
        items, _ = dynamo.query(
            table,
            index=outbox.OUTBOX_INDEX,
            key_condition="outbox_shard = :s",
            vals={":s": str(shard)},
            limit=1,
        )
        if items and (oldest is None or items[0]["outbox_at"] < oldest["outbox_at"]):
            oldest = items[0]
    if oldest is None:
        return None
    return {k: oldest.get(k) for k in ("pk", "accepted_at", "outbox_at", "tenant_id", "attempts")}


def count_pending(table: str) -> int:
    return outbox.count_pending(table)


def count_dead_letters(table: str) -> int:
    total, start = 0, None
    while True:
        kwargs: dict[str, Any] = {
            "TableName": table,
            "IndexName": outbox.DEADLETTER_INDEX,
            "KeyConditionExpression": "dead = :d",
            "ExpressionAttributeValues": dynamo.values({":d": outbox.DEAD}),
            "Select": "COUNT",
        }
        if start:
            kwargs["ExclusiveStartKey"] = start
        try:
            resp = dynamo.client().query(**kwargs)
        except Exception as exc:  # noqa: BLE001 - translated or re-raised by _raise
            _raise(exc, f"count dead letters {table}")
        total += int(resp.get("Count", 0))
        start = resp.get("LastEvaluatedKey")
        if not start:
            return total


def get_last_flush(table: str) -> dict[str, Any] | None:
    item = dynamo.get(table, LAST_FLUSH_KEY)
    if item is None:
        return None
    return {k: v for k, v in item.items() if k not in LAST_FLUSH_KEY}


def put_last_flush(table: str, result: dict[str, Any]) -> None:
    """Overwrite the last flush result (unconditional: the latest run wins)."""
    try:
        dynamo.client().put_item(
            TableName=table, Item=dynamo.serialize({**result, **LAST_FLUSH_KEY})
        )
    except Exception as exc:  # noqa: BLE001 - translated or re-raised by _raise
        _raise(exc, f"put {table}")


def usage_totals(table: str, period: str) -> dict[tuple[str, str], int]:
    """``{(tenant_id, meter): used}`` summed over the counter shards of ``period``."""
    totals: dict[tuple[str, str], int] = defaultdict(int)
    kwargs: dict[str, Any] = {
        "TableName": table,
        "FilterExpression": "begins_with(sk, :shard) AND contains(pk, :period)",
        "ExpressionAttributeValues": dynamo.values({":shard": "SHARD#", ":period": f"#{period}#"}),
    }
    while True:
        try:
            resp = dynamo.client().scan(**kwargs)
        except Exception as exc:  # noqa: BLE001 - translated or re-raised by _raise
            _raise(exc, f"scan {table}")
        for raw in resp.get("Items", []):
            item = dynamo.deserialize(raw)
            parts = str(item["pk"]).split("#")
            # Rate windows (RATE#...) share the SHARD# sort keys but not the key shape.
            if len(parts) != 3 or parts[0] == "RATE" or parts[1] != period:
                continue
            value = next((item[a] for a in COUNTER_ATTRS if isinstance(item.get(a), int)), 0)
            totals[(parts[0], parts[2])] += value
        last = resp.get("LastEvaluatedKey")
        if not last:
            return dict(totals)
        kwargs["ExclusiveStartKey"] = last
