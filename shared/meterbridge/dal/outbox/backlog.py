"""Backlog items: stream records parked while OpenMeter cannot take them (docs/flush.md).

A stream keeps 24 hours. When OpenMeter is down (or ``OPENMETER_ENABLED=false``), the flush
moves what it read from the stream into packed items in the idempotency table, then commits
its stream checkpoint: ``pk = FLUSH#<events table>#BACKLOG#<n>`` (``BACKLOG_SHARDS`` keys, so a
long outage at full rate spreads over partitions), ``sk = <oldest accepted_at>#<uuid>``,
``events`` (the CloudEvents' JSON, one per line, up to ``BACKLOG_MAX_BYTES``), ``count``,
``oldest_at``. No TTL: an item stays until delivered. Each put and each delete moves the
ledger's ``backlog`` counter in the same transaction. A run leases an item (conditional
update) before sending it and deletes it after OpenMeter's 2xx, conditioned on the lease.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from typing import Any

from meterbridge.dal import dynamo
from meterbridge.dal.outbox import ledger

BACKLOG_SHARDS = 4
BACKLOG_MAX_BYTES = 300_000
_FREE = "attribute_not_exists(lease_until) OR lease_until < :now OR lease_owner = :me"


def _pk(events_table: str, shard: int) -> str:
    return f"FLUSH#{events_table}#BACKLOG#{shard}"


def pack(events: Sequence[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """``(accepted_at, event JSON)`` pairs in runs of at most ``BACKLOG_MAX_BYTES``."""
    runs: list[list[tuple[str, str]]] = []
    run: list[tuple[str, str]] = []
    size = 0
    for pair in events:
        grown = size + len(pair[1].encode()) + 1
        if run and grown > BACKLOG_MAX_BYTES:
            runs.append(run)
            run, grown = [], len(pair[1].encode()) + 1
        run.append(pair)
        size = grown
    if run:
        runs.append(run)
    return runs


def park(lease_table: str, events_table: str, events: Sequence[tuple[str, str]]) -> int:
    """Store ``events`` (``(accepted_at, JSON)``) in backlog items; returns how many."""
    parked = 0
    for run in pack(events):
        oldest = min(at for at, _ in run)
        item = {
            "pk": _pk(events_table, random.randrange(BACKLOG_SHARDS)),
            "sk": f"{oldest}#{uuid.uuid4().hex}",
            "events": "\n".join(e for _, e in run),
            "count": len(run),
            "oldest_at": oldest,
        }
        ops: list[Any] = [
            {
                "Put": {
                    "TableName": lease_table,
                    "Item": dynamo.serialize(item),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            ledger.add_op(lease_table, events_table, backlog=len(run)),
        ]
        _transact(ops, f"park {lease_table}")
        parked += len(run)
    return parked


def page(lease_table: str, events_table: str, *, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` backlog items per shard, oldest first within each (one query a shard;
    an empty shard costs 0.5 RRU)."""
    items: list[dict[str, Any]] = []
    for shard in range(BACKLOG_SHARDS):
        found, _ = dynamo.query(
            lease_table,
            key_condition="pk = :p",
            vals={":p": _pk(events_table, shard)},
            limit=limit,
        )
        items.extend(found)
    return sorted(items, key=lambda i: str(i["sk"]))


def oldest(lease_table: str, events_table: str) -> str | None:
    """The acceptance time of the oldest parked event, or None."""
    found = [
        i.get("oldest_at")
        for shard in range(BACKLOG_SHARDS)
        for i in dynamo.query(
            lease_table, key_condition="pk = :p", vals={":p": _pk(events_table, shard)}, limit=1
        )[0]
    ]
    times = [str(t) for t in found if t]
    return min(times) if times else None


def lease(
    lease_table: str, item: dict[str, Any], *, owner: str, now_ms: int, lease_ms: int
) -> bool:
    return dynamo.update_if(
        lease_table,
        {"pk": item["pk"], "sk": item["sk"]},
        set_="SET lease_owner = :me, lease_until = :until",
        condition=f"attribute_exists(pk) AND ({_FREE})",
        vals={":me": owner, ":until": now_ms + lease_ms, ":now": now_ms},
    )


def release(lease_table: str, item: dict[str, Any], *, owner: str) -> None:
    dynamo.update_if(
        lease_table,
        {"pk": item["pk"], "sk": item["sk"]},
        set_="REMOVE lease_owner, lease_until",
        condition="lease_owner = :me",
        vals={":me": owner},
    )


def delivered(lease_table: str, events_table: str, item: dict[str, Any], *, owner: str) -> bool:
    """OpenMeter took the item's events: delete it and lower the counter. False if the lease
    passed to another run (it will delete it)."""
    ops: list[Any] = [
        {
            "Delete": {
                "TableName": lease_table,
                "Key": dynamo.serialize({"pk": item["pk"], "sk": item["sk"]}),
                "ConditionExpression": "lease_owner = :me",
                "ExpressionAttributeValues": dynamo.values({":me": owner}),
            }
        },
        ledger.add_op(lease_table, events_table, backlog=-int(item["count"])),
    ]
    try:
        _transact(ops, f"deliver backlog {lease_table}")
    except _Cancelled:
        return False
    return True


class _Cancelled(Exception):
    pass


def _transact(ops: list[Any], what: str) -> None:
    try:
        dynamo.client().transact_write_items(TransactItems=ops)
    except Exception as exc:
        reasons = dynamo.cancellation_reasons(exc)
        if reasons and "ConditionalCheckFailed" in reasons:
            raise _Cancelled from exc
        if dynamo.is_client_error(exc):
            raise dynamo.translate(exc, what) from exc
        raise
