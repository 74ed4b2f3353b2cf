"""moto's server, with transactions that snapshot only the items they touch.

moto 5.2 backs up a whole table with ``copy.deepcopy`` once per item of every
``TransactWriteItems`` call (100 full-table copies for a 100-item transaction), so a
transaction's cost grows with the table: 2.7 s for 100 items on a 1,000-item table here.
DynamoDB itself does no such thing. This wrapper keeps moto's own transaction code and
semantics and replaces only the backup: it records the touched items before the call and puts
them back if the transaction is cancelled.

    python -m meterbridge.local.moto_server -H 127.0.0.1 -p 5000
"""

from __future__ import annotations

import copy
import sys
from typing import Any


def install() -> None:
    import moto.dynamodb.models as models
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table

    if getattr(DynamoDBBackend, "_meterbridge_patched", False):
        return

    class _NoTableCopy:
        """``copy`` for moto's models module: tables are not copied, everything else is."""

        def __getattr__(self, name: str) -> Any:
            return getattr(copy, name)

        @staticmethod
        def deepcopy(obj: Any, memo: dict[int, Any] | None = None) -> Any:
            if isinstance(obj, Table):
                return obj
            return copy.deepcopy(obj, memo)

    original = DynamoDBBackend.transact_write_items

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        tables = dict(self.tables)
        snapshots: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
        for entry in transact_items[:100]:
            _, op = next(iter(entry.items()))
            table_name = op.get("TableName")
            if not table_name or table_name not in self.tables:
                continue
            table = self.tables[table_name]
            if "Item" in op:
                key = {table.hash_key_attr: op["Item"].get(table.hash_key_attr)}
                if table.range_key_attr:
                    key[table.range_key_attr] = op["Item"].get(table.range_key_attr)
            else:
                key = op.get("Key") or {}
            try:
                current = self.get_item(table_name, key)
            except Exception:  # noqa: BLE001 - a malformed key fails inside moto's own code
                continue
            snapshots.append((table_name, key, current.to_json()["Attributes"] if current else None))
        try:
            original(self, transact_items)
        except BaseException:
            self.tables.update(tables)
            for table_name, key, attrs in reversed(snapshots):
                if attrs is None:
                    self.delete_item(table_name, key)
                else:
                    self.put_item(table_name, attrs)
            raise

    models.copy = _NoTableCopy()  # type: ignore[assignment]
    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    DynamoDBBackend._meterbridge_patched = True  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> None:
    install()
    from moto.server import main as moto_main

    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
