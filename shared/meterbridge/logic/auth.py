"""Tenant authentication: an API key in, the tenant it belongs to out.

Successful lookups are cached in-process for ``KEY_CACHE_TTL_S`` (10 s by default, 60 s at
most): a revoked key or a suspended tenant is refused everywhere within that bound, and at
once by the process that revoked or suspended (it calls ``forget``).
"""

from __future__ import annotations

import threading
import time
from typing import NamedTuple

from meterbridge.dal import tenants as tenants_dal
from meterbridge.errors import TenantSuspended, Unauthorized
from meterbridge.logic import keys
from meterbridge.settings import Settings, get_settings

MAX_CACHE_TTL_S = 60.0


class TenantPrincipal(NamedTuple):
    """Who is calling: the tenant comes from the key, never from the request body.

    Immutable; a NamedTuple rather than a frozen dataclass because it is defined at every cold
    start and costs a sixth as much to define.
    """

    tenant_id: str
    key_id: str
    plan: str
    status: str


_cache: dict[str, tuple[float, TenantPrincipal]] = {}
_cache_lock = threading.Lock()


def forget(lookup_id: str | None = None) -> None:
    """Drop cached lookups (one key, or all) after a revoke, rotation, suspension or plan change."""
    with _cache_lock:
        if lookup_id is None:
            _cache.clear()
        else:
            for cache_key in [k for k, (_, p) in _cache.items() if p.key_id == lookup_id]:
                _cache.pop(cache_key, None)


def _lookup(raw_key: str, settings: Settings) -> TenantPrincipal:
    parsed = keys.parse(raw_key)
    if parsed is None:
        raise Unauthorized("the API key is malformed")
    record = tenants_dal.get_key(settings.tenants_table, parsed.lookup_id)
    if record is None or not keys.matches(raw_key, record.get("key_hash", ""), settings.key_pepper):
        raise Unauthorized("the API key is not valid")
    if record.get("status") != "active":
        raise Unauthorized("the API key has been revoked")
    expires = record.get("expires_at_s")
    if expires is not None and time.time() >= float(expires):
        raise Unauthorized("the API key has expired")
    tenant = tenants_dal.get_tenant(settings.tenants_table, record["tenant_id"])
    if tenant is None or tenant.get("status") == "deleted":
        raise Unauthorized("the API key is not valid")
    return TenantPrincipal(
        tenant_id=tenant["tenant_id"],
        key_id=parsed.lookup_id,
        plan=tenant.get("plan", "free"),
        status=tenant.get("status", "active"),
    )


def cached(raw_key: str | None, settings: Settings | None = None) -> TenantPrincipal | None:
    """``authenticate`` when the answer is in the cache (no I/O), else None."""
    settings = settings or get_settings()
    if not raw_key:
        return None
    ttl = min(settings.key_cache_ttl_s, MAX_CACHE_TTL_S)
    with _cache_lock:
        hit = _cache.get(keys.hash_key(raw_key, settings.key_pepper))
    if hit is None or time.monotonic() - hit[0] >= ttl:
        return None
    return authenticate(raw_key, settings)


def authenticate(raw_key: str | None, settings: Settings | None = None) -> TenantPrincipal:
    """The caller's tenant: 401 for a missing, malformed, unknown or revoked key; 403 suspended."""
    settings = settings or get_settings()
    if not raw_key:
        raise Unauthorized("an API key is required: Authorization: Bearer <key>")
    ttl = min(settings.key_cache_ttl_s, MAX_CACHE_TTL_S)
    cache_key = keys.hash_key(raw_key, settings.key_pepper)
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(cache_key)
    if hit is not None and now - hit[0] < ttl:
        principal = hit[1]
    else:
        principal = _lookup(raw_key, settings)
        if ttl > 0:
            with _cache_lock:
                _cache[cache_key] = (now, principal)
    if principal.status == "suspended":
        raise TenantSuspended("the tenant is suspended; contact the operator")
    return principal
