"""Usage counters, rate windows and threshold markers in the usage table.

Counters: ``<tenant>#<period>#<meter>`` / ``SHARD#<n>`` with attribute ``used``. Soft-limit
plans spread increments over ``SOFT_SHARDS`` items; a hard limit needs one authoritative count
(shard 0), whose write rate the plan's request rate limit bounds far below DynamoDB's per-item
limit. Rate windows: ``RATE#<tenant>#<minute>`` / ``SHARD#<n>``. Thresholds:
``<tenant>#<period>#<meter>`` / ``THRESHOLD#<pct>``, written once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, Protocol

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


def total(table: str, tenant_id: str, period: str, meter: str, aggregation: str) -> Decimal:
    """A meter's period value (0 when nothing was recorded), exact."""
    value = meter_state(table, tenant_id, period, meter, aggregation).total.value
    return Decimal(0) if value is None else value


def take_rate_slot(
    table: str, tenant_id: str, minute: str, shard: int, cap: int, expires_at: int, n: int = 1
) -> bool:
    """Count ``n`` requests in this minute's shard unless that would take it past ``cap``
    (one conditional write whatever ``n``: logic/rate.py reserves slots in chunks)."""
    if not 1 <= n <= cap:
        raise ValueError(f"a chunk of {n} slots does not fit a window of {cap}")
    return dynamo.update_if(
        table,
        {"pk": f"RATE#{tenant_id}#{minute}", "sk": f"SHARD#{shard}"},
        set_="ADD #c :n SET expires_at = :exp",
        condition="attribute_not_exists(#c) OR #c <= :room",
        names={"#c": "count"},
        vals={":n": n, ":room": cap - n, ":exp": expires_at},
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


# -- meter cells (docs/meters.md) ----------------------------------------------------------
#
# A cell is one meter's value in one period, for the whole tenant or for one group (a value of
# each ``group_by`` dimension). Its items share the counter's partition key:
# ``SHARD#<n>`` (the total) and ``GROUP#<group hash>#<n>`` (a group, its dimensions in
# ``group``). Every aggregation is spread over shards and merged on read: sums add, MAX/MIN
# take the extreme, LATEST the shard with the newest (time, id). UNIQUE_COUNT keeps one marker
# per distinct value under ``<counter pk>#UNIQUE`` / ``<group hash or ALL>#<value hash>``,
# put only if new, in the same transaction as the ADD that counts it.

OpKind = Literal["add", "max", "min", "latest", "mark"]


def group_hash(group: Mapping[str, str | None] | None) -> str:
    if group is None:
        return "ALL"
    text = json.dumps(sorted(group.items()), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cell_key(
    tenant_id: str, period: str, meter: str, group: Mapping[str, str | None] | None, shard: int
) -> dict[str, str]:
    sk = f"SHARD#{shard}" if group is None else f"GROUP#{group_hash(group)}#{shard}"
    return {"pk": counter_pk(tenant_id, period, meter), "sk": sk}


def marker_key(
    tenant_id: str, period: str, meter: str, group: Mapping[str, str | None] | None, value: str
) -> dict[str, str]:
    digest = hashlib.sha256(value.encode()).hexdigest()[:32]
    return {
        "pk": f"{counter_pk(tenant_id, period, meter)}#UNIQUE",
        "sk": f"{group_hash(group)}#{digest}",
    }


@dataclass
class CellOp:
    """One transaction item moving a meter cell.

    ``add``: ``ADD used :n`` (with ``cap``: only while the total stays within it). ``max`` /
    ``min`` / ``latest``: ``SET`` only if it moves the value the right way; ``mark``: a
    UNIQUE_COUNT marker put only if new. A failed condition on the last four means the cell
    already holds a value at least as good, or the value was seen: the caller drops the op
    (``droppable``) and retries the rest.
    """

    table: str
    key: dict[str, str]
    kind: OpKind
    amount: Decimal | int = 0
    cap: Decimal | None = None
    group: dict[str, str | None] | None = None
    time: str | None = None
    event_id: str | None = None
    expires_at: int | None = None
    tag: Any = None

    @property
    def droppable(self) -> bool:
        return self.kind != "add"

    def transact_item(self) -> dict[str, Any]:
        if self.kind == "mark":
            item = {**self.key, "expires_at": self.expires_at}
            return {
                "Put": {
                    "TableName": self.table,
                    "Item": dynamo.serialize(item),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }
        names = {"#u": "used"}
        vals: dict[str, Any] = {":n": self.amount}
        sets: list[str] = []
        if self.group is not None:
            names["#g"] = "group"
            vals[":g"] = self.group
            sets.append("#g = :g")
        condition = None
        if self.kind == "add":
            expression = "ADD #u :n"
            if self.cap is not None:
                vals[":room"] = self.cap - Decimal(self.amount)
                # An amount above the whole cap cannot fit, even on a fresh counter.
                condition = (
                    "attribute_exists(#u) AND #u <= :room"
                    if Decimal(self.amount) > self.cap
                    else "attribute_not_exists(#u) OR #u <= :room"
                )
        else:
            sets.append("#u = :n")
            if self.kind == "max":
                condition = "attribute_not_exists(#u) OR #u < :n"
            elif self.kind == "min":
                condition = "attribute_not_exists(#u) OR #u > :n"
            else:
                names.update({"#t": "t", "#i": "eid"})
                vals.update({":t": self.time, ":i": self.event_id})
                sets.extend(["#t = :t", "#i = :i"])
                condition = "attribute_not_exists(#t) OR #t < :t OR (#t = :t AND #i < :i)"
            expression = ""
        if sets:
            expression = (expression + " SET " + ", ".join(sets)).strip()
        update: dict[str, Any] = {
            "TableName": self.table,
            "Key": dynamo.serialize(self.key),
            "UpdateExpression": expression,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": dynamo.serialize(vals),
        }
        if condition:
            update["ConditionExpression"] = condition
        return {"Update": update}


@dataclass
class CellValue:
    """A cell's merged value; ``None`` when nothing was recorded."""

    value: Decimal | None = None
    time: str = ""
    event_id: str = ""


@dataclass
class MeterState:
    total: CellValue = field(default_factory=CellValue)
    groups: dict[str, tuple[dict[str, Any], CellValue]] = field(default_factory=dict)


def _merge(cell: CellValue, item: Mapping[str, Any], aggregation: str) -> None:
    value = item.get("used")
    if value is None:
        return
    other = CellValue(Decimal(value), str(item.get("t", "")), str(item.get("eid", "")))
    merge_cell(cell, other, aggregation)


def merge_cell(cell: CellValue, other: CellValue, aggregation: str) -> None:
    """Fold ``other`` (a shard, a group) into ``cell`` by the meter's aggregation."""
    if other.value is None:
        return
    if cell.value is None:
        cell.value, cell.time, cell.event_id = other.value, other.time, other.event_id
    elif aggregation in ("COUNT", "SUM", "UNIQUE_COUNT"):
        cell.value += other.value
    elif aggregation == "MAX":
        cell.value = max(cell.value, other.value)
    elif aggregation == "MIN":
        cell.value = min(cell.value, other.value)
    elif (other.time, other.event_id) > (cell.time, cell.event_id):
        cell.value, cell.time, cell.event_id = other.value, other.time, other.event_id


def meter_state(
    table: str, tenant_id: str, period: str, meter: str, aggregation: str
) -> MeterState:
    """A meter's total and groups for one period, merged over shards (exact: Decimal)."""
    state = MeterState()
    start: dict[str, Any] | None = None
    while True:
        kwargs: dict[str, Any] = {
            "TableName": table,
            "KeyConditionExpression": "pk = :p",
            "ExpressionAttributeValues": dynamo.serialize(
                {":p": counter_pk(tenant_id, period, meter)}
            ),
            "ConsistentRead": True,
        }
        if start:
            kwargs["ExclusiveStartKey"] = start
        resp = dynamo.call("query", f"query {table}", **kwargs)
        for raw in resp.get("Items", []):
            item = dynamo.deserialize_exact(raw)
            sk = str(item["sk"])
            if sk.startswith("SHARD#"):
                _merge(state.total, item, aggregation)
            elif sk.startswith("GROUP#"):
                ghash = sk.split("#")[1]
                group = item.get("group") or {}
                entry = state.groups.setdefault(ghash, (dict(group), CellValue()))
                _merge(entry[1], item, aggregation)
        start = resp.get("LastEvaluatedKey")
        if not start:
            return state


class UsageStore(Protocol):
    """What ingest reads and writes in the usage table beyond its counter transaction."""

    table: str

    def total(self, tenant_id: str, period: str, meter: str, aggregation: str) -> Decimal: ...

    def mark_threshold(
        self, tenant_id: str, period: str, meter: str, pct: int, expires_at: int
    ) -> bool: ...


class UsageCounters:
    """The usage table as ingest's thresholds and hard limits read it (a repository: unit
    tests pass an in-memory fake)."""

    def __init__(self, table: str) -> None:
        self.table = table

    def total(self, tenant_id: str, period: str, meter: str, aggregation: str) -> Decimal:
        return total(self.table, tenant_id, period, meter, aggregation)

    def mark_threshold(
        self, tenant_id: str, period: str, meter: str, pct: int, expires_at: int
    ) -> bool:
        return mark_threshold(self.table, tenant_id, period, meter, pct, expires_at)
