"""Tenant authentication: an API key in, the tenant it belongs to out.

Successful lookups are cached in-process for ``KEY_CACHE_TTL_S`` (10 s by default, 60 s at
most), and never past the key's own expiry (a rotated key's grace): a revoked key or a
suspended tenant is refused everywhere within that bound, an expiring key at its expiry, and
at once by the process that revoked, rotated or suspended (it calls ``forget``).

Refused keys are cached too (``NEGATIVE_TTL_S``, at most ``NEGATIVE_CACHE_SIZE`` entries,
oldest dropped first): by key (a wrong secret, a revoked or expired key) and by lookup id when
no key has that id. A flood repeating a bad key, or any keys of a lookup id that does not
exist, costs no DynamoDB read after the first; malformed keys (bad prefix, length or
checksum) never cost one. Every distinct well-formed key still costs one read: the stage
throttle bounds those.

Stream tokens carry a key's lookup id, not its secret: ``principal_for_key`` re-checks that
key (same cache, same bounds), so a revoked key's tokens stop working within the TTL too.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from meterbridge.dal import keys as keys_dal
from meterbridge.dal import tenants as tenants_dal
from meterbridge.errors import TenantSuspended, Unauthorized
from meterbridge.logic.keys import format as keys
from meterbridge.models.principal import StoredKey, TenantPrincipal
from meterbridge.settings import Settings, get_settings

MAX_CACHE_TTL_S = 60.0
# Refusals are remembered this long (or the key-cache TTL if shorter), this many at most.
NEGATIVE_TTL_S = 5.0
NEGATIVE_CACHE_SIZE = 10_000


_cache: dict[str, tuple[float, TenantPrincipal]] = {}
# Refused keys (by key hash, or "lookup:<id>" for a lookup id that does not exist):
# monotonic time the refusal is remembered until, and its message.
_refused: OrderedDict[str, tuple[float, str]] = OrderedDict()
_cache_lock = threading.Lock()


def forget(lookup_id: str | None = None) -> None:
    """Drop cached lookups (one key, or all) after a revoke, rotation, suspension or plan change."""
    with _cache_lock:
        if lookup_id is None:
            _cache.clear()
            _refused.clear()
        else:
            for cache_key in [k for k, (_, p) in _cache.items() if p.key_id == lookup_id]:
                _cache.pop(cache_key, None)
            _refused.pop(f"lookup:{lookup_id}", None)


def _refuse(cache_key: str, message: str, settings: Settings) -> Unauthorized:
    ttl = min(NEGATIVE_TTL_S, settings.key_cache_ttl_s)
    if ttl > 0:
        with _cache_lock:
            _refused[cache_key] = (time.monotonic() + ttl, message)
            _refused.move_to_end(cache_key)
            while len(_refused) > NEGATIVE_CACHE_SIZE:
                _refused.popitem(last=False)
    return Unauthorized(message)


def _refused_before(*cache_keys: str) -> str | None:
    """The cached refusal of any of ``cache_keys`` still in force, else None."""
    now = time.monotonic()
    with _cache_lock:
        for cache_key in cache_keys:
            hit = _refused.get(cache_key)
            if hit is not None:
                if now < hit[0]:
                    return hit[1]
                _refused.pop(cache_key, None)
    return None


def _principal(
    record: StoredKey, lookup_id: str, settings: Settings, refusal_key: str
) -> TenantPrincipal:
    """The principal of an authentic key record: revoked, expired and deleted are refused."""
    if record.status != "active":
        raise _refuse(refusal_key, "the API key has been revoked", settings)
    expires_at = record.expires_at
    if expires_at is not None and time.time() >= expires_at:
        raise _refuse(refusal_key, "the API key has expired", settings)
    tenant = tenants_dal.standing(settings.tenants_table, record.tenant_id)
    if tenant is None or tenant.status == "deleted":
        raise _refuse(refusal_key, "the API key is not valid", settings)
    return TenantPrincipal(
        tenant_id=tenant.tenant_id,
        key_id=lookup_id,
        plan=tenant.plan,
        status=tenant.status,
        expires_at=expires_at,
    )


def _lookup(raw_key: str, cache_key: str, settings: Settings) -> TenantPrincipal:
    parsed = keys.parse(raw_key)
    if parsed is None:
        raise Unauthorized("the API key is malformed")
    refused = _refused_before(cache_key, f"lookup:{parsed.lookup_id}")
    if refused is not None:
        raise Unauthorized(refused)
    record = keys_dal.stored_key(settings.tenants_table, parsed.lookup_id)
    if record is None:
        # Confirmed by a consistent read before it is cached: a key issued a moment ago may
        # not be visible to an eventually consistent one yet.
        record = keys_dal.stored_key(settings.tenants_table, parsed.lookup_id, consistent=True)
    if record is None:
        raise _refuse(f"lookup:{parsed.lookup_id}", "the API key is not valid", settings)
    if not keys.matches(raw_key, record.key_hash, settings.key_pepper):
        raise _refuse(cache_key, "the API key is not valid", settings)
    return _principal(record, parsed.lookup_id, settings, cache_key)


def _fresh(hit: tuple[float, TenantPrincipal] | None, ttl: float) -> TenantPrincipal | None:
    """The cached principal if it is within the TTL and its key has not expired."""
    if hit is None or time.monotonic() - hit[0] >= ttl:
        return None
    principal = hit[1]
    if principal.expires_at is not None and time.time() >= principal.expires_at:
        return None
    return principal


def cached(raw_key: str | None, settings: Settings | None = None) -> TenantPrincipal | None:
    """``authenticate`` when the answer is in the cache (no I/O), else None."""
    settings = settings or get_settings()
    if not raw_key:
        return None
    ttl = min(settings.key_cache_ttl_s, MAX_CACHE_TTL_S)
    cache_key = keys.hash_key(raw_key, settings.key_pepper)
    with _cache_lock:
        hit = _cache.get(cache_key)
    principal = _fresh(hit, ttl)
    if principal is not None:
        return _checked(principal)
    refused = _refused_before(cache_key)
    if refused is not None:
        raise Unauthorized(refused)
    return None


def _checked(principal: TenantPrincipal) -> TenantPrincipal:
    if principal.status == "suspended":
        raise TenantSuspended("the tenant is suspended; contact the operator")
    return principal


def _remember(cache_key: str, principal: TenantPrincipal, now: float, ttl: float) -> None:
    if ttl > 0:
        with _cache_lock:
            _cache[cache_key] = (now, principal)


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
    principal = _fresh(hit, ttl)
    if principal is None:
        principal = _lookup(raw_key, cache_key, settings)
        _remember(cache_key, principal, now, ttl)
    return _checked(principal)


def principal_for_key(
    lookup_id: str, tenant_id: str, settings: Settings | None = None, *, fresh: bool = False
) -> TenantPrincipal:
    """The principal of the key ``lookup_id`` of ``tenant_id`` (a stream token's claims).

    401 once the key is revoked, expired or not the tenant's, 403 if the tenant is suspended.
    Cached like ``authenticate``; ``fresh`` reads DynamoDB whatever the cache holds (the
    periodic re-check of open streams) and refreshes the cache.
    """
    settings = settings or get_settings()
    ttl = min(settings.key_cache_ttl_s, MAX_CACHE_TTL_S)
    cache_key = f"kid:{lookup_id}"
    now = time.monotonic()
    principal = None
    if not fresh:
        with _cache_lock:
            hit = _cache.get(cache_key)
        principal = _fresh(hit, ttl)
        refused = _refused_before(cache_key)
        if refused is not None:
            raise Unauthorized(refused)
    if principal is None:
        record = keys_dal.stored_key(settings.tenants_table, lookup_id)
        if record is None or record.tenant_id != tenant_id:
            raise _refuse(cache_key, "the stream token is not valid", settings)
        principal = _principal(record, lookup_id, settings, cache_key)
        _remember(cache_key, principal, now, ttl)
    return _checked(principal)
