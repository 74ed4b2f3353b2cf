"""Builders for test data that go through the product's own DAL (no hand-made items)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from meterbridge.dal import tenants as tenants_dal
from meterbridge.logic import keys
from meterbridge.settings import get_settings


def make_tenant(plan: str = "basic", status: str = "active", name: str = "Acme") -> tuple[str, str]:
    """A tenant with one active API key; returns (tenant_id, raw_key)."""
    settings = get_settings()
    tenant_id = "t_" + uuid.uuid4().hex[:16]
    now = datetime.now(UTC).isoformat()
    tenants_dal.put_tenant(
        settings.tenants_table,
        {
            "tenant_id": tenant_id,
            "name": name,
            "email": f"{tenant_id}@example.com",
            "plan": plan,
            "status": status,
            "created_at": now,
        },
    )
    raw, lookup = keys.generate("test")
    tenants_dal.put_key(
        settings.tenants_table,
        {
            "lookup_id": lookup,
            "tenant_id": tenant_id,
            "prefix": raw[:12],
            "key_hash": keys.hash_key(raw, settings.key_pepper),
            "status": "active",
            "created_at": now,
        },
    )
    return tenant_id, raw
