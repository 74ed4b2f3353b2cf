"""DynamoDB capacity units of every call a botocore client makes, by DynamoDB's billing rules.

moto does not meter capacity (its ``ConsumedCapacity``, where it answers one at all, is a
fixed number), so the units are computed from each call's own parameters and answer, which
makes them deterministic:

- item size: the sum over attributes of the name's UTF-8 length plus the value's size
  (S: UTF-8 length; N: (significant digits + 1) / 2 + 1; B: bytes; BOOL/NULL: 1; L/M: 3 plus
  1 per element plus the elements; sets: the members);
- writes (PutItem, UpdateItem, DeleteItem, each BatchWriteItem request): ceil(size / 1 KB)
  write units per item; in TransactWriteItems twice that, ConditionCheck included;
- reads (GetItem, Query, Scan): ceil(size of what was read / 4 KB), half for an eventually
  consistent read; TransactGetItems twice, per item.

The size of a written item is the size in the request: exact for puts; for updates it is the
key plus the values set, a lower bound of the stored item, exact to the unit for the counter
and rate-window items the server updates (all well under 1 KB). Deletes count the key.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from typing import Any

KB = 1024


def value_size(value: dict[str, Any]) -> int:
    (kind, v), *_ = value.items()
    if kind == "S":
        return len(v.encode("utf-8"))
    if kind == "N":
        digits = len(v.lstrip("-").replace(".", "").strip("0")) or 1
        return (digits + 1) // 2 + 1
    if kind == "B":
        return len(v)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode("utf-8")) for s in v)
    if kind == "NS":
        return sum(value_size({"N": n}) for n in v)
    if kind == "BS":
        return sum(len(b) for b in v)
    if kind == "L":
        return 3 + sum(1 + value_size(x) for x in v)
    if kind == "M":
        return 3 + sum(1 + len(k.encode("utf-8")) + value_size(x) for k, x in v.items())
    raise ValueError(f"unknown attribute type {kind}")


def item_size(item: dict[str, Any]) -> int:
    return sum(len(name.encode("utf-8")) + value_size(v) for name, v in item.items())


def _update_size(op: dict[str, Any]) -> int:
    values = op.get("ExpressionAttributeValues") or {}
    return item_size(op["Key"]) + sum(value_size(v) for v in values.values())


def write_units(size: int) -> int:
    return max(1, math.ceil(size / KB))


def read_units(size: int, consistent: bool) -> float:
    units = max(1, math.ceil(size / (4 * KB)))
    return float(units) if consistent else units / 2


def units_of(operation: str, params: dict[str, Any], parsed: dict[str, Any]) -> tuple[float, int]:
    """(read units, write units) of one call."""
    if operation == "PutItem":
        return 0.0, write_units(item_size(params["Item"]))
    if operation == "UpdateItem":
        return 0.0, write_units(_update_size(params))
    if operation == "DeleteItem":
        return 0.0, write_units(item_size(params["Key"]))
    if operation == "BatchWriteItem":
        wcu = 0
        for requests in params["RequestItems"].values():
            for req in requests:
                if "PutRequest" in req:
                    wcu += write_units(item_size(req["PutRequest"]["Item"]))
                else:
                    wcu += write_units(item_size(req["DeleteRequest"]["Key"]))
        return 0.0, wcu
    if operation == "TransactWriteItems":
        wcu = 0
        for entry in params["TransactItems"]:
            (kind, op), *_ = entry.items()
            if kind == "Put":
                size = item_size(op["Item"])
            elif kind == "Update":
                size = _update_size(op)
            else:  # Delete, ConditionCheck
                size = item_size(op["Key"])
            wcu += 2 * write_units(size)
        return 0.0, wcu
    consistent = bool(params.get("ConsistentRead"))
    if operation == "GetItem":
        item = parsed.get("Item")
        return read_units(item_size(item) if item else 0, consistent), 0
    if operation in ("Query", "Scan"):
        size = sum(item_size(i) for i in parsed.get("Items", []))
        return read_units(size, consistent), 0
    if operation == "TransactGetItems":
        rcu = 0.0
        for response in parsed.get("Responses", []):
            item = response.get("Item")
            rcu += 2 * read_units(item_size(item) if item else 0, True)
        return rcu, 0
    if operation == "BatchGetItem":
        rcu = 0.0
        for table, items in parsed.get("Responses", {}).items():
            consistent = bool(params["RequestItems"][table].get("ConsistentRead"))
            rcu += sum(read_units(item_size(i), consistent) for i in items)
        return rcu, 0
    return 0.0, 0  # control-plane calls (DescribeTable, ...) are not billed per request


class UnitMeter:
    """botocore hooks on one client: requests and units, by operation, until ``take()``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.requests: Counter[str] = Counter()
        self.rcu = 0.0
        self.wcu = 0

    def install(self, client: Any) -> None:
        client.meta.events.register("before-parameter-build.dynamodb", self._before)
        client.meta.events.register("after-call.dynamodb", self._after)

    def _before(
        self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any
    ) -> None:
        context["bench_params"] = dict(params)

    def _after(self, parsed: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        rcu, wcu = units_of(model.name, context.get("bench_params", {}), parsed or {})
        with self._lock:
            self.requests[model.name] += 1
            self.rcu += rcu
            self.wcu += wcu

    def take(self) -> dict[str, Any]:
        with self._lock:
            out = {"requests": dict(self.requests), "rcu": self.rcu, "wcu": self.wcu}
            self._reset()
        return out
