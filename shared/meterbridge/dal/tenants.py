"""Tenant profiles, API key records and provisioning records in the tenants table.

Items (docs/data-model.md, docs/tenants.md):

- ``TENANT#<id>``/``PROFILE``: the profile (in the ``tenants`` index: ``gsi1pk = "TENANT"``).
- ``KEY#<lookup_id>``/``KEY``: the key record the usage API authenticates against: tenant_id,
  key_hash, prefix, status, created_at, last_used_at, expires_at_s. All of a key's mutable
  state lives here only.
- ``TENANT#<id>``/``KEY#<lookup_id>``: an immutable index entry (no hash) so a tenant's keys can
  be listed with one query; written in the same transaction as the lookup item.
- ``PROVISION#<idempotency-key>``/``PROVISION``: the provisioning state machine.
- ``STRIPE#<cus_id>``/``CUSTOMER``: Stripe customer -> tenant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from meterbridge.dal import dynamo
from meterbridge.errors import ConditionFailed

PROFILE_SK = "PROFILE"
KEY_SK = "KEY"
PROVISION_SK = "PROVISION"
TENANTS_INDEX = "tenants"


def tenant_pk(tenant_id: str) -> str:
    return f"TENANT#{tenant_id}"


def key_lookup_pk(lookup_id: str) -> str:
    return f"KEY#{lookup_id}"


def provision_pk(idempotency_key: str) -> str:
    return f"PROVISION#{idempotency_key}"


def profile_key(tenant_id: str) -> dict[str, str]:
    return {"pk": tenant_pk(tenant_id), "sk": PROFILE_SK}


def key_key(lookup_id: str) -> dict[str, str]:
    return {"pk": key_lookup_pk(lookup_id), "sk": KEY_SK}


def provision_key(idempotency_key: str) -> dict[str, str]:
    return {"pk": provision_pk(idempotency_key), "sk": PROVISION_SK}


# -- profiles ------------------------------------------------------------------------------


def profile_item(profile: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "pk": tenant_pk(profile["tenant_id"]),
        "sk": PROFILE_SK,
        "gsi1pk": "TENANT",
        "gsi1sk": f"{profile['created_at']}#{profile['tenant_id']}",
        **profile,
    }


def get_tenant(table: str, tenant_id: str) -> dict[str, Any] | None:
    return dynamo.get(table, profile_key(tenant_id))


def put_tenant(table: str, profile: dict[str, Any]) -> bool:
    """Create a tenant profile once; False if it exists."""
    return dynamo.put_new(table, profile_item(profile))


def update_tenant(
    table: str,
    tenant_id: str,
    *,
    set_: str,
    condition: str,
    names: Mapping[str, str] | None = None,
    vals: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """A conditional update of the profile; ``ConditionFailed`` when ``condition`` does not hold."""
    return dynamo.update(
        table, profile_key(tenant_id), set_=set_, condition=condition, names=names, vals=vals
    )


def list_tenants(
    table: str, *, limit: int, start_key: Mapping[str, Any] | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """One page of profiles, oldest first (the ``tenants`` index)."""
    return dynamo.query(
        table,
        index=TENANTS_INDEX,
        key_condition="gsi1pk = :p",
        vals={":p": "TENANT"},
        limit=limit,
        start_key=start_key,
    )


def page_key(item: Mapping[str, Any]) -> dict[str, Any]:
    """The ``ExclusiveStartKey`` that continues a ``tenants`` index query after ``item``."""
    return {k: item[k] for k in ("pk", "sk", "gsi1pk", "gsi1sk")}


def put_customer_map(table: str, customer_id: str, tenant_id: str) -> bool:
    return dynamo.put_new(
        table, {"pk": f"STRIPE#{customer_id}", "sk": "CUSTOMER", "tenant_id": tenant_id}
    )


# -- keys ----------------------------------------------------------------------------------


def key_lookup_item(record: Mapping[str, Any]) -> dict[str, Any]:
    return {**key_key(record["lookup_id"]), **record}


def key_index_item(record: Mapping[str, Any]) -> dict[str, Any]:
    """The listing entry: immutable fields only, never the hash."""
    return {
        "pk": tenant_pk(record["tenant_id"]),
        "sk": key_lookup_pk(record["lookup_id"]),
        "lookup_id": record["lookup_id"],
        "tenant_id": record["tenant_id"],
        "prefix": record["prefix"],
        "created_at": record["created_at"],
    }


def put_key(table: str, record: dict[str, Any]) -> bool:
    """Store a key record (hash only) under its lookup id; False if the lookup id exists.

    Writes the lookup item and the tenant's index entry together (one transaction).
    """
    try:
        transact_write(key_put_ops(table, record))
    except ConditionFailed:
        return False
    return True


def key_put_ops(table: str, record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The transaction operations that create a key (lookup item and index entry)."""
    return [
        put_op(table, key_lookup_item(record), condition="attribute_not_exists(pk)"),
        put_op(table, key_index_item(record), condition="attribute_not_exists(pk)"),
    ]


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
            vals={":p": tenant_pk(tenant_id), ":k": "KEY#"},
            start_key=start,
            consistent=True,
        )
        ids.extend(str(item["lookup_id"]) for item in items)
        if start is None:
            return ids


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
    set_: str,
    condition: str,
    names: Mapping[str, str] | None = None,
    vals: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    return dynamo.update(
        table, key_key(lookup_id), set_=set_, condition=condition, names=names, vals=vals
    )


# -- provisioning --------------------------------------------------------------------------


def start_provision(table: str, item: Mapping[str, Any]) -> bool:
    """Claim an idempotency key: True if this call created the record."""
    return dynamo.put_new(table, {**provision_key(item["idempotency_key"]), **item})


def get_provision(table: str, idempotency_key: str) -> dict[str, Any] | None:
    return dynamo.get(table, provision_key(idempotency_key))


def update_provision(
    table: str,
    idempotency_key: str,
    *,
    set_: str,
    condition: str,
    names: Mapping[str, str] | None = None,
    vals: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    return dynamo.update(
        table,
        provision_key(idempotency_key),
        set_=set_,
        condition=condition,
        names=names,
        vals=vals,
    )


# -- transactions --------------------------------------------------------------------------


def put_op(
    table: str,
    item: Mapping[str, Any],
    *,
    condition: str | None = None,
    names: Mapping[str, str] | None = None,
    vals: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {"TableName": table, "Item": dynamo.serialize(item)}
    _conditions(op, condition, names, vals)
    return {"Put": op}


def update_op(
    table: str,
    key: Mapping[str, Any],
    *,
    set_: str,
    condition: str | None = None,
    names: Mapping[str, str] | None = None,
    vals: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "TableName": table,
        "Key": dynamo.serialize(key),
        "UpdateExpression": set_,
    }
    _conditions(op, condition, names, vals)
    return {"Update": op}


def _conditions(
    op: dict[str, Any],
    condition: str | None,
    names: Mapping[str, str] | None,
    vals: Mapping[str, Any] | None,
) -> None:
    if condition:
        op["ConditionExpression"] = condition
    if names:
        op["ExpressionAttributeNames"] = dict(names)
    if vals:
        op["ExpressionAttributeValues"] = dynamo.values(vals)


def transact_write(ops: Sequence[Mapping[str, Any]]) -> None:
    """All of ``ops`` or none (TransactWriteItems); ``ConditionFailed`` if a condition failed."""
    try:
        dynamo.client().transact_write_items(TransactItems=list(ops))  # type: ignore[arg-type]
    except Exception as exc:
        if dynamo.is_client_error(exc):
            raise dynamo.translate(exc, "transaction") from exc
        raise


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
