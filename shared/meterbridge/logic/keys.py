"""API key records: issue, list, revoke, rotate (the admin API's calls).

The key format, generation and hashing are ``logic.key_format`` (re-exported here); after a
revoke or rotation the process drops its cached lookups with ``auth.forget``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from meterbridge.dal import tenants as tenants_dal
from meterbridge.errors import ConditionFailed, Conflict, NotFound
from meterbridge.logic.key_format import (  # noqa: F401  (the format, re-exported)
    ALPHABET,
    BODY_LEN,
    CHECKSUM_LEN,
    LOOKUP_LEN,
    PREFIXES,
    SECRET_LEN,
    ParsedKey,
    checksum,
    generate,
    hash_key,
    matches,
    parse,
)
from meterbridge.settings import Settings, get_settings
from meterbridge.timestamps import rfc3339

if TYPE_CHECKING:  # pragma: no cover
    # Imported where keys are listed, issued or rotated (the admin API, which loads these models
    # for its routes anyway): the usage API uses only the format (key_format), and building the
    # tenant models would cost its cold start about 5 ms (docs/performance/cold_start.md).
    from meterbridge.models.tenant import ApiKey, IssuedKey, KeyRotation


# -- key records: issue, list, revoke, rotate ----------------------------------------------

PREFIX_LEN = 12  # "mb_test_" and 4 lookup characters: enough to recognise, never the secret
ISSUABLE_STATUSES = frozenset({"active", "suspended"})


def new_record(tenant_id: str, settings: Settings) -> tuple[str, dict[str, object]]:
    """A fresh key and the record to store for it (hash and prefix only)."""
    raw, lookup = generate(settings.key_environment)
    record: dict[str, object] = {
        "lookup_id": lookup,
        "tenant_id": tenant_id,
        "prefix": raw[:PREFIX_LEN],
        "key_hash": hash_key(raw, settings.key_pepper),
        "status": "active",
        "created_at": rfc3339(),
    }
    return raw, record


def to_api_key(record: dict[str, object]) -> ApiKey:
    from meterbridge.models.tenant import ApiKey

    expires = record.get("expires_at_s")
    status = record.get("status", "active")
    if status == "active" and expires is not None and time.time() >= float(expires):  # type: ignore[arg-type]
        status = "expired"  # a rotated key past its grace period: refused like a revoked one
    return ApiKey(
        key_id=str(record["lookup_id"]),
        tenant_id=str(record["tenant_id"]),
        prefix=str(record["prefix"]),
        status=status,  # type: ignore[arg-type]
        created_at=str(record["created_at"]),
        last_used_at=record.get("last_used_at"),  # type: ignore[arg-type]
        expires_at=rfc3339(float(expires)) if expires is not None else None,  # type: ignore[arg-type]
    )


def issued(raw: str, record: dict[str, object]) -> IssuedKey:
    from meterbridge.models.tenant import IssuedKey

    return IssuedKey(**to_api_key(record).model_dump(), secret=raw)


def _tenant_for_keys(tenant_id: str, settings: Settings) -> dict[str, object]:
    tenant = tenants_dal.get_tenant(settings.tenants_table, tenant_id)
    if tenant is None:
        raise NotFound(f"tenant {tenant_id} not found")
    return tenant


def issue(tenant_id: str, settings: Settings | None = None) -> IssuedKey:
    """A new active key for the tenant; the secret is in this answer only."""
    settings = settings or get_settings()
    tenant = _tenant_for_keys(tenant_id, settings)
    if tenant.get("status") not in ISSUABLE_STATUSES:
        raise Conflict(f"tenant {tenant_id} is {tenant.get('status')}; no key can be issued")
    raw, record = new_record(tenant_id, settings)
    if not tenants_dal.put_key(settings.tenants_table, record):
        # A 71-bit lookup id collided: astronomically unlikely, but never overwrite a key.
        raise Conflict("key id collision; retry the request")
    return issued(raw, record)


def list_keys(tenant_id: str, settings: Settings | None = None) -> list[ApiKey]:
    """Every key of the tenant (active, expiring and revoked), oldest first; never a secret."""
    settings = settings or get_settings()
    _tenant_for_keys(tenant_id, settings)
    ids = tenants_dal.list_key_ids(settings.tenants_table, tenant_id)
    records = tenants_dal.get_keys(settings.tenants_table, ids)
    found = [to_api_key(r) for r in records if r.get("tenant_id") == tenant_id]
    return sorted(found, key=lambda k: (k.created_at, k.key_id))


def _own_key(tenant_id: str, key_id: str, settings: Settings) -> dict[str, object]:
    record = tenants_dal.get_key_consistent(settings.tenants_table, key_id)
    if record is None or record.get("tenant_id") != tenant_id:
        raise NotFound(f"key {key_id} not found for tenant {tenant_id}")
    return record


def revoke(tenant_id: str, key_id: str, settings: Settings | None = None) -> ApiKey:
    """Revoke a key at once (idempotent). Other processes' caches drop it within the TTL."""
    from meterbridge.logic.auth import forget

    settings = settings or get_settings()
    _own_key(tenant_id, key_id, settings)
    try:
        record = tenants_dal.update_key(
            settings.tenants_table,
            key_id,
            set_="SET #s = :revoked, revoked_at = :now",
            condition="tenant_id = :t AND #s = :active",
            names={"#s": "status"},
            vals={":revoked": "revoked", ":active": "active", ":now": rfc3339(), ":t": tenant_id},
        )
    except ConditionFailed:
        record = _own_key(tenant_id, key_id, settings)  # already revoked: same answer
    forget(key_id)
    assert record is not None
    return to_api_key(record)


def revoke_all(tenant_id: str, settings: Settings) -> int:
    """Revoke every active key of the tenant (offboarding); the number revoked."""
    count = 0
    for record in tenants_dal.get_keys(
        settings.tenants_table, tenants_dal.list_key_ids(settings.tenants_table, tenant_id)
    ):
        if record.get("status") == "active" and record.get("tenant_id") == tenant_id:
            revoke(tenant_id, str(record["lookup_id"]), settings)
            count += 1
    return count


def rotate(
    tenant_id: str, key_id: str, grace_seconds: int, settings: Settings | None = None
) -> KeyRotation:
    """A new key; the old one keeps working for ``grace_seconds`` and then expires.

    The new key and the old key's expiry are written in one transaction, so a failure leaves
    either both or neither. An old key already expiring sooner keeps its earlier expiry.
    """
    from meterbridge.logic.auth import forget
    from meterbridge.models.tenant import KeyRotation

    settings = settings or get_settings()
    tenant = _tenant_for_keys(tenant_id, settings)
    if tenant.get("status") not in ISSUABLE_STATUSES:
        raise Conflict(f"tenant {tenant_id} is {tenant.get('status')}; keys cannot be rotated")
    old = _own_key(tenant_id, key_id, settings)
    if old.get("status") != "active":
        raise Conflict(f"key {key_id} is revoked; issue a new key instead")
    expires_at_s = int(time.time()) + grace_seconds
    raw, record = new_record(tenant_id, settings)
    table = settings.tenants_table
    ops = tenants_dal.key_put_ops(table, record)
    ops.append(
        tenants_dal.update_op(
            table,
            tenants_dal.key_key(key_id),
            set_="SET expires_at_s = :e, rotated_to = :n",
            condition="tenant_id = :t AND #s = :active AND "
            "(attribute_not_exists(expires_at_s) OR expires_at_s > :e)",
            names={"#s": "status"},
            vals={
                ":e": expires_at_s,
                ":n": record["lookup_id"],
                ":t": tenant_id,
                ":active": "active",
            },
        )
    )
    try:
        tenants_dal.transact_write(ops)
    except ConditionFailed:
        raise Conflict(
            f"key {key_id} changed while rotating (revoked or already expiring sooner)"
        ) from None
    forget(key_id)
    return KeyRotation(
        new_key=issued(raw, record),
        old_key=to_api_key(_own_key(tenant_id, key_id, settings)),
    )
