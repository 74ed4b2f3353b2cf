"""Meter every DynamoDB request the product's clients make, by DynamoDB's billing rules.

A botocore hook on the product's own clients (``dynamo.client()``, ``dynamo.streams_client()``):
``before-parameter-build`` sees each request's parameters, ``after-call`` its answer. For each
write the item is read before and after (with a separate, unmetered client), so an update is
charged on the larger of the two and every index entry it puts, changes or removes is counted
from template.yaml's ``GlobalSecondaryIndexes``. Reads are charged on the full items read (a
projection does not lower a Query's units). ``GetRecords`` calls are streams read request
units, priced apart.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from bench.cost import sizes

WRITES = {"PutItem", "UpdateItem", "DeleteItem"}


@dataclass(frozen=True)
class Index:
    name: str
    keys: tuple[str, ...]
    projection: str
    included: tuple[str, ...] = ()


def indexes_from_template(physical: dict[str, str]) -> dict[str, list[Index]]:
    """``{table name: [Index]}`` from template.yaml for the tables in ``physical``
    (logical id -> table name)."""
    from meterbridge_dev.stack.tables import table_specs

    found: dict[str, list[Index]] = {}
    for logical, spec in table_specs().items():
        if logical not in physical:
            continue
        found[physical[logical]] = [
            Index(
                gsi["IndexName"],
                tuple(k["AttributeName"] for k in gsi["KeySchema"]),
                gsi["Projection"]["ProjectionType"],
                tuple(gsi["Projection"].get("NonKeyAttributes", ())),
            )
            for gsi in spec["create_table"].get("GlobalSecondaryIndexes", [])
        ]
    return found


class Meter:
    """Units by (phase, kind), kind in ``wru``, ``rru``, ``stream_reads``."""

    def __init__(self, indexes: dict[str, list[Index]], raw: Any) -> None:
        self.indexes = indexes
        self.raw = raw  # an unmetered client, to read items before and after writes
        self.phase = "other"
        self.units: dict[tuple[str, str], float] = defaultdict(float)
        self._local = threading.local()
        self._lock = threading.Lock()

    # -- hooks -----------------------------------------------------------------------------

    def install(self, client: Any, streams: Any) -> None:
        client.meta.events.register("before-parameter-build.dynamodb", self._before)
        client.meta.events.register("after-call.dynamodb", self._after)
        streams.meta.events.register("after-call.dynamodbstreams.GetRecords", self._stream)

    def _before(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        op = model.name
        olds: list[Any] = []
        if op in WRITES:
            olds = [self._get(params["TableName"], self._key(params["TableName"], params))]
        elif op == "TransactWriteItems":
            for entry in params["TransactItems"]:
                ((_, body),) = entry.items()
                olds.append(self._get(body["TableName"], self._key(body["TableName"], body)))
        elif op == "BatchWriteItem":
            for table, requests in params["RequestItems"].items():
                for r in requests:
                    body = r.get("PutRequest") or r.get("DeleteRequest")
                    olds.append(self._get(table, self._key(table, body)))
        stack = getattr(self._local, "stack", None) or []
        stack.append((op, params, olds))
        self._local.stack = stack

    def _after(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        stack = getattr(self._local, "stack", None) or []
        if not stack:
            return
        op, params, olds = stack.pop()
        failed = "Error" in parsed
        phase = self._phase_of(op, params)
        wru, rru = self._units(op, params, olds, parsed, failed)
        with self._lock:
            self.units[(phase, "wru")] += wru
            self.units[(phase, "rru")] += rru

    def _stream(self, parsed: dict[str, Any], **_: Any) -> None:
        with self._lock:
            self.units[(self._phase_of("GetRecords", {}), "stream_reads")] += 1

    # -- arithmetic --------------------------------------------------------------------------

    def _key(self, table: str, body: dict[str, Any]) -> dict[str, Any]:
        source = body.get("Key") or body.get("Item") or {}
        return {k: source[k] for k in ("pk", "sk") if k in source}

    def _get(self, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        if not key:
            return None
        resp = self.raw.get_item(TableName=table, Key=key, ConsistentRead=True)
        return resp.get("Item")

    def _write(self, table: str, old: Any, new: Any, *, transactional: bool) -> int:
        units = sizes.write_units(
            max(sizes.item_size(old), sizes.item_size(new)), transactional=transactional
        )
        for index in self.indexes.get(table, []):
            entries = [
                sizes.index_entry(
                    i,
                    index_keys=index.keys,
                    table_keys=("pk", "sk"),
                    projection=index.projection,
                    included=index.included,
                )
                for i in (old, new)
            ]
            units += sizes.index_write_units(entries[0], entries[1], index.keys)
        return units

    def _units(
        self, op: str, params: dict[str, Any], olds: list[Any], parsed: dict[str, Any], failed: bool
    ) -> tuple[float, float]:
        if op in WRITES:
            table = params["TableName"]
            new = None if op == "DeleteItem" else self._get(table, self._key(table, params))
            if failed:  # a failed condition is charged on the item's size; nothing changed
                size = max(sizes.item_size(olds[0]), sizes.item_size(params.get("Item")))
                return float(sizes.write_units(size)), 0.0
            return float(self._write(table, olds[0], new, transactional=False)), 0.0
        if op == "TransactWriteItems":
            total = 0
            for entry, old in zip(params["TransactItems"], olds, strict=True):
                ((kind, body),) = entry.items()
                table = body["TableName"]
                if failed or kind == "ConditionCheck":
                    size = max(sizes.item_size(old), sizes.item_size(body.get("Item")))
                    total += sizes.write_units(size, transactional=True)
                    continue
                new = None if kind == "Delete" else self._get(table, self._key(table, body))
                total += self._write(table, old, new, transactional=True)
            return float(total), 0.0
        if op == "BatchWriteItem":
            total, n = 0, 0
            for table, requests in params["RequestItems"].items():
                for r in requests:
                    body = r.get("PutRequest") or r.get("DeleteRequest")
                    new = self._get(table, self._key(table, body)) if "PutRequest" in r else None
                    total += self._write(table, olds[n], new, transactional=False)
                    n += 1
            return float(total), 0.0
        consistent = bool(params.get("ConsistentRead"))
        if op == "GetItem":
            item = parsed.get("Item")
            full = self._get(params["TableName"], self._key(params["TableName"], item or {}))
            return 0.0, sizes.read_units(sizes.item_size(full), consistent=consistent)
        if op == "BatchGetItem":
            total = 0.0
            for table, items in (parsed.get("Responses") or {}).items():
                for item in items:
                    full = self._get(table, self._key(table, item))
                    total += sizes.read_units(sizes.item_size(full), consistent=consistent)
            return 0.0, total
        if op in ("Query", "Scan"):
            table = params["TableName"]
            read = 0
            for item in parsed.get("Items") or []:
                full = self._get(table, self._key(table, item)) if "pk" in item else None
                read += sizes.item_size(full or item)
            return 0.0, sizes.read_units(read, consistent=consistent)
        return 0.0, 0.0  # DescribeTable and other control-plane calls: not metered

    def _phase_of(self, op: str, params: dict[str, Any]) -> str:
        """The flush's requests by job (claim, delivery, mark, backlog, run); the others by
        the phase the bench set."""
        if self.phase != "flush":
            return self.phase
        if op == "GetRecords":
            return "delivery"
        key = ""
        if op in WRITES or op in ("GetItem",):
            key = str((params.get("Key") or params.get("Item") or {}).get("pk", {}).get("S", ""))
        if op == "TransactWriteItems":
            ((_, body),) = params["TransactItems"][0].items()
            key = str((body.get("Key") or body.get("Item") or {}).get("pk", {}).get("S", ""))
        if op == "BatchGetItem":
            return "claim"
        if "#STREAM#" in key:
            return "mark" if "seq" in str(params.get("UpdateExpression", "")) else "claim"
        if "#BACKLOG#" in key:
            return "backlog"
        if op == "Query" and params.get("IndexName") == "republish":
            return "nats feed"
        if key.startswith("//meterbridge/") or key.startswith("SEG#"):
            return "mark"  # dead letters, republish markers
        return "run"  # leases of the segment layout, ledger, status gauges, last result
