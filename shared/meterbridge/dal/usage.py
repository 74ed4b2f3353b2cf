"""Usage counters, rate windows and threshold markers in the usage table.

Counters: ``<tenant>#<period>#<meter>`` / ``SHARD#<n>`` with attribute ``used``. Soft-limit
plans spread increments over ``SOFT_SHARDS`` items; a hard limit needs one authoritative count
(shard 0), whose write rate the plan's request rate limit bounds far below DynamoDB's per-item
limit. Rate windows: ``RATE#<tenant>#<minute>`` / ``SHARD#<n>``. Thresholds:
``<tenant>#<period>#<meter>`` / ``THRESHOLD#<pct>``, written once.
"""

from __future__ import annotations

from meterbridge.dal import dynamo

SOFT_SHARDS = 8
RATE_SHARDS = 8


def counter_pk(tenant_id: str, period: str, meter: str) -> str:
    return f"{tenant_id}#{period}#{meter}"


def counter_key(tenant_id: str, period: str, meter: str, shard: int) -> dict[str, str]:
    return {"pk": counter_pk(tenant_id, period, meter), "sk": f"SHARD#{shard}"}


def used(table: str, tenant_id: str, period: str, meter: str) -> int:
    """The period's total for one meter: the sum of its shards (one query)."""
    items, _ = dynamo.query(
        table,
        key_condition="pk = :p AND begins_with(sk, :s)",
        vals={":p": counter_pk(tenant_id, period, meter), ":s": "SHARD#"},
        consistent=True,
    )
    return sum(int(item.get("used", 0)) for item in items)


def take_rate_slot(
    table: str, tenant_id: str, minute: str, shard: int, cap: int, expires_at: int
) -> bool:
    """Count one request in this minute's shard unless it is at ``cap``."""

    return dynamo.update_if(
        table,
        {"pk": f"RATE#{tenant_id}#{minute}", "sk": f"SHARD#{shard}"},
        set_="ADD #c :one SET expires_at = :exp",
        condition="attribute_not_exists(#c) OR #c < :cap",
        names={"#c": "count"},
        vals={":one": 1, ":cap": cap, ":exp": expires_at},
    )


def mark_threshold(
    table: str, tenant_id: str, period: str, meter: str, pct: int, expires_at: int
) -> bool:
    """Record that ``pct``% was crossed this period; True only for the first writer."""
    return dynamo.put_new(
        table,
        {
            "pk": counter_pk(tenant_id, period, meter),
            "sk": f"THRESHOLD#{pct}",
            "expires_at": expires_at,
        },
    )
