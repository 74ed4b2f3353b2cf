"""API key records in the tenants table, and the repository the key logic speaks to.

Items (docs/data-model.md):

- ``KEY#<lookup_id>``/``KEY``: the key record the usage API authenticates against: tenant_id,
  key_hash, prefix, status, created_at, last_used_at, expires_at_s. All of a key's mutable
  state lives here only.
- ``TENANT#<id>``/``KEY#<lookup_id>``: an immutable index entry (no hash) so a tenant's keys can
  be listed with one query; written in the same transaction as the lookup item.

The repository takes and returns ``KeyRecord`` models; the module functions below it work on
the items' attributes (benchmarks and test builders write keys through them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from meterbridge.dal import dynamo
from meterbridge.dal import tenants as tenants_dal
from meterbridge.errors import ConditionFailed, KeyChanged
from meterbridge.models.principal import StoredKey

if TYPE_CHECKING:  # pragma: no cover
    from meterbridge.models.tenant import KeyRecord
    from meterbridge.settings import Settings

KEY_SK = "KEY"


def key_lookup_pk(lookup_id: str) -> str:
    return f"KEY#{lookup_id}"


def key_key(lookup_id: str) -> dict[str, str]:
    return {"pk": key_lookup_pk(lookup_id), "sk": KEY_SK}


def key_lookup_item(record: Mapping[str, Any]) -> dict[str, Any]:
    return {**key_key(record["lookup_id"]), **record}


def key_index_item(record: Mapping[str, Any]) -> dict[str, Any]:
    """The listing entry: immutable fields only, never the hash."""
    return {
        "pk": tenants_dal.tenant_pk(record["tenant_id"]),
        "sk": key_lookup_pk(record["lookup_id"]),
        "lookup_id": record["lookup_id"],
        "tenant_id": record["tenant_id"],
        "prefix": record["prefix"],
        "created_at": record["created_at"],
    }


def key_put_ops(table: str, record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The transaction operations that create a key (lookup item and index entry)."""
    return [
        tenants_dal.put_op(table, key_lookup_item(record), condition="attribute_not_exists(pk)"),
        tenants_dal.put_op(table, key_index_item(record), condition="attribute_not_exists(pk)"),
    ]


def put_key(table: str, record: dict[str, Any]) -> bool:
    """Store a key record (hash only) under its lookup id; False if the lookup id exists.

    Writes the lookup item and the tenant's index entry together (one transaction).
    """
    try:
        tenants_dal.transact_write(key_put_ops(table, record))
    except ConditionFailed:
        return False
    return True


def get_key(table: str, lookup_id: str) -> dict[str, Any] | None:
    return dynamo.get(table, key_key(lookup_id), consistent=False)


def get_key_consistent(table: str, lookup_id: str) -> dict[str, Any] | None:
    return dynamo.get(table, key_key(lookup_id), consistent=True)


def list_key_ids(table: str, tenant_id: str) -> list[str]:
    """Lookup ids of every key the tenant ever had, oldest id order (not time order)."""
    ids: list[str] = []
    start: dict[str, Any] | None = None
    while True:
        items, start = dynamo.query(
            table,
            key_condition="pk = :p AND begins_with(sk, :k)",
            vals={":p": tenants_dal.tenant_pk(tenant_id), ":k": "KEY#"},
            start_key=start,
            consistent=True,
        )
        ids.extend(str(item["lookup_id"]) for item in items)
        if start is None:
            return ids


def stored_key(table: str, lookup_id: str, *, consistent: bool = False) -> StoredKey | None:
    """The key as authentication checks it (None: no such key). ``consistent`` confirms a key
    issued a moment ago that an eventually consistent read may not see yet."""
    item = get_key_consistent(table, lookup_id) if consistent else get_key(table, lookup_id)
    if item is None:
        return None
    expires = item.get("expires_at_s")
    return StoredKey(
        lookup_id=lookup_id,
        tenant_id=str(item["tenant_id"]),
        key_hash=str(item.get("key_hash", "")),
        status=str(item.get("status")),
        expires_at=float(expires) if expires is not None else None,
    )


def get_keys(table: str, lookup_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The lookup items of ``lookup_ids`` (BatchGetItem, 100 at a time, unprocessed retried)."""
    found: list[dict[str, Any]] = []
    for start in range(0, len(lookup_ids), 100):
        pending: dict[str, Any] = {
            table: {
                "Keys": [dynamo.serialize(key_key(i)) for i in lookup_ids[start : start + 100]],
                "ConsistentRead": True,
            }
        }
        for _ in range(10):
            try:
                resp = dynamo.client().batch_get_item(RequestItems=pending)
            except Exception as exc:
                if dynamo.is_client_error(exc):
                    raise dynamo.translate(exc, f"batch get {table}") from exc
                raise
            found.extend(dynamo.deserialize(i) for i in resp.get("Responses", {}).get(table, []))
            pending = resp.get("UnprocessedKeys") or {}
            if not pending:
                break
    return found


def update_key(
    table: str,
    lookup_id: str,
    *,
    fields: Mapping[str, Any],
    expect: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Set ``fields`` on the key item if it exists and each attribute of ``expect`` has its
    value there; the item after. ``ConditionFailed`` otherwise."""
    set_, names, vals = tenants_dal.set_expr(fields)
    condition, expect_names, expect_vals = tenants_dal.match_expr(expect or {})
    return dynamo.update(
        table,
        key_key(lookup_id),
        set_=set_,
        condition=condition,
        names={**names, **expect_names},
        vals={**vals, **expect_vals},
    )


def touch_key(table: str, lookup_id: str, now_iso: str, not_since_iso: str) -> bool:
    """Set ``last_used_at`` on the key item unless it was set at or after ``not_since_iso``.

    The condition makes "at most once a minute per key" hold across processes: of many
    concurrent callers one writes, the others get ConditionalCheckFailed (False). A key that is
    gone is left alone.
    """
    return dynamo.update_if(
        table,
        key_key(lookup_id),
        set_="SET last_used_at = :now",
        condition=(
            "attribute_exists(pk) AND (attribute_not_exists(last_used_at) OR last_used_at < :since)"
        ),
        vals={":now": now_iso, ":since": not_since_iso},
    )


def expiry_op(
    table: str, lookup_id: str, *, tenant_id: str, expires_at_s: int, rotated_to: str
) -> dict[str, Any]:
    """The rotation's update of the old key: it expires at ``expires_at_s`` unless it is not the
    tenant's, not active, or already expiring sooner."""
    return tenants_dal.update_op(
        table,
        key_key(lookup_id),
        set_="SET expires_at_s = :e, rotated_to = :n",
        condition="tenant_id = :t AND #s = :active AND "
        "(attribute_not_exists(expires_at_s) OR expires_at_s > :e)",
        names={"#s": "status"},
        vals={":e": expires_at_s, ":n": rotated_to, ":t": tenant_id, ":active": "active"},
    )


def _record(item: Mapping[str, Any]) -> KeyRecord:
    # Deferred: the usage API reads keys through the functions above and never builds the
    # admin API's models (docs/performance/cold_start.md).
    from meterbridge.models.tenant import KeyRecord

    return KeyRecord.model_validate(item)


class KeyRepository:
    """The key records of the tenants table, in the key logic's verbs: models in and out."""

    def __init__(self, table: str) -> None:
        self.table = table

    def create(self, record: KeyRecord) -> bool:
        """Store a new key record; False if its lookup id is taken (never overwritten)."""
        return put_key(self.table, record.model_dump(exclude_none=True))

    def get(self, lookup_id: str) -> KeyRecord | None:
        """The key record, read consistently (None: no such key)."""
        item = get_key_consistent(self.table, lookup_id)
        return None if item is None else _record(item)

    def of_tenant(self, tenant_id: str) -> list[KeyRecord]:
        """Every key record the tenant ever had (active, expiring and revoked), unordered."""
        items = get_keys(self.table, list_key_ids(self.table, tenant_id))
        return [_record(i) for i in items if i.get("tenant_id") == tenant_id]

    def revoke(self, tenant_id: str, lookup_id: str, *, at: str) -> KeyRecord:
        """Revoke an active key of the tenant; ``KeyChanged`` if it is not (already revoked)."""
        try:
            record = update_key(
                self.table,
                lookup_id,
                fields={"status": "revoked", "revoked_at": at},
                expect={"tenant_id": tenant_id, "status": "active"},
            )
        except ConditionFailed as exc:
            raise KeyChanged(f"key {lookup_id} is not active") from exc
        assert record is not None
        return _record(record)

    def rotate(self, tenant_id: str, lookup_id: str, new: KeyRecord, *, expires_at_s: int) -> None:
        """Store ``new`` and set the old key to expire at ``expires_at_s``, both or neither.

        ``KeyChanged`` if the old key was revoked meanwhile or already expires sooner (or the
        new lookup id is taken).
        """
        ops = key_put_ops(self.table, new.model_dump(exclude_none=True))
        ops.append(
            expiry_op(
                self.table,
                lookup_id,
                tenant_id=tenant_id,
                expires_at_s=expires_at_s,
                rotated_to=new.lookup_id,
            )
        )
        try:
            tenants_dal.transact_write(ops)
        except ConditionFailed as exc:
            raise KeyChanged(
                f"key {lookup_id} changed while rotating (revoked or already expiring sooner)"
            ) from exc

    def touch(self, lookup_id: str, now_iso: str, not_since_iso: str) -> bool:
        """Note the key's use at ``now_iso`` unless one was noted at or after ``not_since_iso``."""
        return touch_key(self.table, lookup_id, now_iso, not_since_iso)


def repository(settings: Settings) -> KeyRepository:
    """The key repository of ``settings``' tables (the unit tests replace this)."""
    return KeyRepository(settings.tenants_table)
