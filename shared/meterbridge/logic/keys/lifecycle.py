"""API key records: issue, list, revoke, rotate (the admin API's calls).

The key format, generation and hashing are ``keys.format``; after a revoke or rotation the
process drops its cached lookups with ``auth.forget``. The records are the key repository's
(``dal.keys``): the conditions that make a revoke idempotent and a rotation all-or-nothing are
there.
"""

from __future__ import annotations

import time

from meterbridge.dal import keys as keys_dal
from meterbridge.dal import tenants as tenants_dal
from meterbridge.errors import Conflict, KeyChanged, NotFound
from meterbridge.logic.auth import forget
from meterbridge.logic.keys.format import generate, hash_key
from meterbridge.models.tenant import ApiKey, IssuedKey, KeyRecord, KeyRotation, KeyStatus
from meterbridge.settings import Settings, get_settings
from meterbridge.timestamps import rfc3339

PREFIX_LEN = 12  # "mb_test_" and 4 lookup characters: enough to recognise, never the secret
ISSUABLE_STATUSES = frozenset({"active", "suspended"})


def new_record(tenant_id: str, settings: Settings) -> tuple[str, KeyRecord]:
    """A fresh key and the record to store for it (hash and prefix only)."""
    raw, lookup = generate(settings.key_environment)
    record = KeyRecord(
        lookup_id=lookup,
        tenant_id=tenant_id,
        prefix=raw[:PREFIX_LEN],
        key_hash=hash_key(raw, settings.key_pepper),
        status="active",
        created_at=rfc3339(),
    )
    return raw, record


def to_api_key(record: KeyRecord) -> ApiKey:
    expires = record.expires_at_s
    status: KeyStatus = record.status
    if status == "active" and expires is not None and time.time() >= float(expires):
        status = "expired"  # a rotated key past its grace period: refused like a revoked one
    return ApiKey(
        key_id=record.lookup_id,
        tenant_id=record.tenant_id,
        prefix=record.prefix,
        status=status,
        created_at=record.created_at,
        last_used_at=record.last_used_at,
        expires_at=rfc3339(float(expires)) if expires is not None else None,
    )


def issued(raw: str, record: KeyRecord) -> IssuedKey:
    return IssuedKey(**to_api_key(record).model_dump(), secret=raw)


def _tenant_status(tenant_id: str, settings: Settings) -> str:
    tenant = tenants_dal.repository(settings).get(tenant_id)
    if tenant is None:
        raise NotFound(f"tenant {tenant_id} not found")
    return tenant.status


def issue(tenant_id: str, settings: Settings | None = None) -> IssuedKey:
    """A new active key for the tenant; the secret is in this answer only."""
    settings = settings or get_settings()
    status = _tenant_status(tenant_id, settings)
    if status not in ISSUABLE_STATUSES:
        raise Conflict(f"tenant {tenant_id} is {status}; no key can be issued")
    raw, record = new_record(tenant_id, settings)
    if not keys_dal.repository(settings).create(record):
        # A 71-bit lookup id collided: astronomically unlikely, but never overwrite a key.
        raise Conflict("key id collision; retry the request")
    return issued(raw, record)


def list_keys(tenant_id: str, settings: Settings | None = None) -> list[ApiKey]:
    """Every key of the tenant (active, expiring and revoked), oldest first; never a secret."""
    settings = settings or get_settings()
    _tenant_status(tenant_id, settings)
    found = [to_api_key(r) for r in keys_dal.repository(settings).of_tenant(tenant_id)]
    return sorted(found, key=lambda k: (k.created_at, k.key_id))


def _own_key(tenant_id: str, key_id: str, settings: Settings) -> KeyRecord:
    record = keys_dal.repository(settings).get(key_id)
    if record is None or record.tenant_id != tenant_id:
        raise NotFound(f"key {key_id} not found for tenant {tenant_id}")
    return record


def revoke(tenant_id: str, key_id: str, settings: Settings | None = None) -> ApiKey:
    """Revoke a key at once (idempotent). Other processes' caches drop it within the TTL."""
    settings = settings or get_settings()
    _own_key(tenant_id, key_id, settings)
    try:
        record = keys_dal.repository(settings).revoke(tenant_id, key_id, at=rfc3339())
    except KeyChanged:
        record = _own_key(tenant_id, key_id, settings)  # already revoked: same answer
    forget(key_id)
    return to_api_key(record)


def revoke_all(tenant_id: str, settings: Settings) -> int:
    """Revoke every active key of the tenant (offboarding); the number revoked."""
    count = 0
    for record in keys_dal.repository(settings).of_tenant(tenant_id):
        if record.status == "active":
            revoke(tenant_id, record.lookup_id, settings)
            count += 1
    return count


def rotate(
    tenant_id: str, key_id: str, grace_seconds: int, settings: Settings | None = None
) -> KeyRotation:
    """A new key; the old one keeps working for ``grace_seconds`` and then expires.

    The new key and the old key's expiry are written in one transaction, so a failure leaves
    either both or neither. An old key already expiring sooner keeps its earlier expiry.
    """
    settings = settings or get_settings()
    status = _tenant_status(tenant_id, settings)
    if status not in ISSUABLE_STATUSES:
        raise Conflict(f"tenant {tenant_id} is {status}; keys cannot be rotated")
    old = _own_key(tenant_id, key_id, settings)
    if old.status != "active":
        raise Conflict(f"key {key_id} is revoked; issue a new key instead")
    raw, record = new_record(tenant_id, settings)
    keys_dal.repository(settings).rotate(
        tenant_id, key_id, record, expires_at_s=int(time.time()) + grace_seconds
    )
    forget(key_id)
    return KeyRotation(
        new_key=issued(raw, record),
        old_key=to_api_key(_own_key(tenant_id, key_id, settings)),
    )
