"""Running counters of the outbox, so no run counts a whole backlog or dead-letter history.

One item in the idempotency table, ``FLUSH#<events table>#LEDGER``/``TOTALS``:
- ``backlog``: events parked in backlog items (``backlog.py``), moved in the same transaction
  as the item that holds them;
- ``dead``: dead letters not yet retried: ``+1`` when the flush dead-letters an event, ``-1``
  when it reads a retried one (``REQUEUE``) from the stream; seeded once with a count of the
  ``deadletters`` index when a stack upgrades from the segment layout (``dead_seeded``).
Only the flush writes it. Reading it is one ``GetItem`` (0.5 RRU).
"""

from __future__ import annotations

from typing import Any

from meterbridge.dal import dynamo

LEDGER_SK = "TOTALS"


def ledger_key(events_table: str) -> dict[str, str]:
    return {"pk": f"FLUSH#{events_table}#LEDGER", "sk": LEDGER_SK}


def read(lease_table: str, events_table: str) -> dict[str, Any]:
    item = dynamo.get(lease_table, ledger_key(events_table), consistent=False) or {}
    return {
        "backlog": max(0, int(item.get("backlog", 0))),
        "dead": max(0, int(item.get("dead", 0))),
        "dead_seeded": bool(item.get("dead_seeded", False)),
    }


def add_op(lease_table: str, events_table: str, **deltas: int) -> dict[str, Any]:
    """A ``TransactWriteItems`` entry adding ``deltas`` to the counters."""
    names = {f"#c{i}": name for i, name in enumerate(deltas)}
    vals = {f":v{i}": value for i, value in enumerate(deltas.values())}
    return {
        "Update": {
            "TableName": lease_table,
            "Key": dynamo.serialize(ledger_key(events_table)),
            "UpdateExpression": "ADD "
            + ", ".join(f"{n} {v}" for n, v in zip(names, vals, strict=True)),
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": dynamo.values(vals),
        }
    }


def add(lease_table: str, events_table: str, **deltas: int) -> None:
    entry = add_op(lease_table, events_table, **deltas)["Update"]
    dynamo.call("update_item", f"ledger {lease_table}", **entry)


def seed_dead(lease_table: str, events_table: str, count: int) -> bool:
    """Start the dead-letter counter from a one-time count (the upgrade). False if done."""
    return dynamo.update_if(
        lease_table,
        ledger_key(events_table),
        set_="SET dead_seeded = :t ADD dead :n",
        condition="attribute_not_exists(dead_seeded)",
        vals={":t": True, ":n": count},
    )
