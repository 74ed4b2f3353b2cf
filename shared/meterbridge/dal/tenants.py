"""Tenant profiles and API key records in the tenants table (docs/data-model.md)."""

from __future__ import annotations

from typing import Any

from meterbridge.dal import dynamo

PROFILE_SK = "PROFILE"


def tenant_pk(tenant_id: str) -> str:
    return f"TENANT#{tenant_id}"


def key_lookup_pk(lookup_id: str) -> str:
    return f"KEY#{lookup_id}"


def get_tenant(table: str, tenant_id: str) -> dict[str, Any] | None:
    return dynamo.get(table, {"pk": tenant_pk(tenant_id), "sk": PROFILE_SK})


def put_tenant(table: str, profile: dict[str, Any]) -> bool:
    """Create a tenant profile once; False if it exists."""
    item = {
        "pk": tenant_pk(profile["tenant_id"]),
        "sk": PROFILE_SK,
        "gsi1pk": "TENANT",
        "gsi1sk": f"{profile['created_at']}#{profile['tenant_id']}",
        **profile,
    }
    return dynamo.put_new(table, item)


def put_key(table: str, record: dict[str, Any]) -> bool:
    """Store a key record (hash only) under its lookup id; False if the lookup id exists."""
    item = {"pk": key_lookup_pk(record["lookup_id"]), "sk": "KEY", **record}
    return dynamo.put_new(table, item)


def get_key(table: str, lookup_id: str) -> dict[str, Any] | None:
    return dynamo.get(table, {"pk": key_lookup_pk(lookup_id), "sk": "KEY"}, consistent=False)
