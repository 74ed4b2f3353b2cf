"""Tenant profiles in the tenants table, and the repository the tenant logic speaks to.

Items (docs/data-model.md, docs/tenants.md):

- ``TENANT#<id>``/``PROFILE``: the profile (in the ``tenants`` index: ``gsi1pk = "TENANT"``).
- ``STRIPE#<cus_id>``/``CUSTOMER``: Stripe customer -> tenant.

The key records are ``dal.keys``, the provisioning records ``dal.provisioning``; the same table
holds them, and the transaction helpers here serve all three.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from meterbridge.dal import dynamo, outbox
from meterbridge.errors import ConditionFailed, TenantChanged, ValidationFailed
from meterbridge.models.principal import TenantStanding

if TYPE_CHECKING:  # pragma: no cover
    from meterbridge.models.cloudevent import CloudEvent
    from meterbridge.models.tenant import Tenant
    from meterbridge.settings import Settings

PROFILE_SK = "PROFILE"
TENANTS_INDEX = "tenants"
PAGE_KEY = ("pk", "sk", "gsi1pk", "gsi1sk")


def tenant_pk(tenant_id: str) -> str:
    return f"TENANT#{tenant_id}"


def profile_key(tenant_id: str) -> dict[str, str]:
    return {"pk": tenant_pk(tenant_id), "sk": PROFILE_SK}


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


def standing(table: str, tenant_id: str) -> TenantStanding | None:
    """The tenant's plan and status, as authentication reads them (None: no such tenant)."""
    item = get_tenant(table, tenant_id)
    if item is None:
        return None
    return TenantStanding(
        tenant_id=str(item["tenant_id"]),
        plan=str(item.get("plan", "free")),
        status=str(item.get("status", "active")),
    )


def put_tenant(table: str, profile: dict[str, Any]) -> bool:
    """Create a tenant profile once; False if it exists."""
    return dynamo.put_new(table, profile_item(profile))


def update_tenant(
    table: str,
    tenant_id: str,
    *,
    fields: Mapping[str, Any] | None = None,
    if_absent: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Set ``fields`` on the profile, and each of ``if_absent`` where the profile has no value
    yet; the profile after. ``ConditionFailed`` when there is no profile."""
    set_, names, vals = set_expr(fields or {}, if_absent)
    return dynamo.update(
        table,
        profile_key(tenant_id),
        set_=set_,
        condition="attribute_exists(pk)",
        names=names,
        vals=vals,
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
    return {k: item[k] for k in PAGE_KEY}


def encode_cursor(start: Mapping[str, Any]) -> str:
    raw = json.dumps(dict(start), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, Any]:
    """The start key a cursor of ``encode_cursor`` holds; ``ValidationFailed`` if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor.encode() + b"=" * (-len(cursor) % 4))
        start = json.loads(raw)
    except (binascii.Error, ValueError):
        raise ValidationFailed("the cursor is not valid") from None
    if not isinstance(start, dict) or set(start) != set(PAGE_KEY):
        raise ValidationFailed("the cursor is not valid")
    return start


def put_customer_map(table: str, customer_id: str, tenant_id: str) -> bool:
    return dynamo.put_new(
        table, {"pk": f"STRIPE#{customer_id}", "sk": "CUSTOMER", "tenant_id": tenant_id}
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


def set_expr(
    fields: Mapping[str, Any], if_absent: Mapping[str, Any] | None = None
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """``SET #f0 = :v0, ...`` with every attribute name aliased (no reserved-word surprises);
    the attributes of ``if_absent`` are set only where the item has none (``if_not_exists``)."""
    assignments = [*fields.items(), *(if_absent or {}).items()]
    names = {f"#f{i}": name for i, (name, _) in enumerate(assignments)}
    vals = {f":v{i}": value for i, (_, value) in enumerate(assignments)}
    parts = [f"#f{i} = :v{i}" for i in range(len(fields))]
    parts += [f"#f{i} = if_not_exists(#f{i}, :v{i})" for i in range(len(fields), len(assignments))]
    return "SET " + ", ".join(parts), names, vals


def match_expr(expect: Mapping[str, Any]) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The condition "the item exists and each attribute of ``expect`` has its value", aliased
    as ``#e0``/``:e0``... so it joins a ``set_expr`` without a clash."""
    names = {f"#e{i}": name for i, name in enumerate(expect)}
    vals = {f":e{i}": value for i, value in enumerate(expect.values())}
    parts = ["attribute_exists(pk)", *(f"#e{i} = :e{i}" for i in range(len(expect)))]
    return " AND ".join(parts), names, vals


def outbox_ops(events_table: str, event: CloudEvent, tenant_id: str) -> list[dict[str, Any]]:
    """The lifecycle event's outbox record (only if new), for the caller's transaction: its
    stream INSERT queues it for OpenMeter."""
    item = outbox.outbox_item(event, tenant_id=tenant_id, kind="tenant")
    return outbox.put_ops(events_table, [item])


def _tenant(item: Mapping[str, Any]) -> Tenant:
    from meterbridge.models.tenant import Tenant

    return Tenant.model_validate(item)


class TenantRepository:
    """Tenant profiles in the tenant logic's verbs: models in, models out."""

    def __init__(self, table: str, events_table: str) -> None:
        self.table = table
        self.events_table = events_table

    def get(self, tenant_id: str) -> Tenant | None:
        item = get_tenant(self.table, tenant_id)
        return None if item is None else _tenant(item)

    def plan_changes(self, tenant_id: str) -> list[Any]:
        """The profile's record of plan changes in the current period (docs/billing.md)."""
        profile = get_tenant(self.table, tenant_id) or {}
        return list(profile.get("plan_changes") or [])

    def create(self, tenant: Tenant) -> bool:
        """Store a new profile; False if the tenant exists (it is never overwritten)."""
        return put_tenant(self.table, tenant.model_dump(exclude_none=True))

    def link_customer(self, customer_id: str, tenant_id: str) -> bool:
        """Map a Stripe customer to its tenant (once; False if mapped already)."""
        return put_customer_map(self.table, customer_id, tenant_id)

    def transition(
        self,
        tenant_id: str,
        *,
        expect: int,
        to: Mapping[str, Any],
        event: CloudEvent | None = None,
        removes: Sequence[str] = (),
    ) -> None:
        """Apply ``to`` (and drop ``removes``) and move the version to ``expect + 1``, if the
        profile is still at version ``expect``; ``event`` joins the outbox in the same
        transaction. ``TenantChanged`` if someone changed the profile meanwhile."""
        set_, names, vals = set_expr({**to, "version": expect + 1})
        if removes:
            names.update({f"#r{i}": k for i, k in enumerate(removes)})
            set_ += " REMOVE " + ", ".join(f"#r{i}" for i in range(len(removes)))
        vals[":expected"] = expect
        names["#ver"] = "version"
        ops = [
            update_op(
                self.table,
                profile_key(tenant_id),
                set_=set_,
                condition="#ver = :expected",
                names=names,
                vals=vals,
            )
        ]
        if event is not None:
            ops.extend(outbox_ops(self.events_table, event, tenant_id))
        try:
            transact_write(ops)
        except ConditionFailed as exc:
            raise TenantChanged(
                f"tenant {tenant_id} changed concurrently; read it and retry"
            ) from exc

    def mark_offboarding(self, tenant_id: str, *, at: str) -> dict[str, Any]:
        """Note when offboarding began (the first time only); the profile after, as billing
        reads it."""
        profile = update_tenant(self.table, tenant_id, if_absent={"offboarding_at": at})
        return profile or {}

    def scan(self, cursor: str | None, *, batch: int) -> Iterator[tuple[Tenant, str]]:
        """Every tenant from ``cursor`` on, oldest first, each with the cursor continuing after
        it; ``batch`` profiles are read at a time."""
        start = decode_cursor(cursor) if cursor else None
        while True:
            items, start = list_tenants(self.table, limit=batch, start_key=start)
            for item in items:
                yield _tenant(item), encode_cursor(page_key(item))
            if start is None:
                return


def repository(settings: Settings) -> TenantRepository:
    """The tenant repository of ``settings``' tables (the unit tests replace this)."""
    return TenantRepository(settings.tenants_table, settings.events_table)
