"""The FastAPI dependency that turns ``Authorization: Bearer <key>`` into a tenant."""

import asyncio
import weakref

from fastapi import Request

from meterbridge.api.admin_auth import bearer_token
from meterbridge.api.admission import STATE_BURSTING, STATE_PRINCIPAL
from meterbridge.api.blocking import on_lambda, run_blocking
from meterbridge.logic import rate
from meterbridge.logic.auth import authenticate, cached
from meterbridge.logic.keys.usage import note_used
from meterbridge.models.principal import TenantPrincipal
from meterbridge.observability import bind_tenant
from meterbridge.plans import catalog


async def require_tenant(request: Request) -> TenantPrincipal:
    """The calling tenant (401/403 otherwise); its id is on every log line from here on.

    Also the tenant's in-process rate limit (429 with no I/O) and its fair share of this
    process's blocking work (``request.state.max_in_flight`` and ``.bursting``, used by
    ``run_blocking``). When ``TenantAdmission`` (api/admission.py) already admitted the
    request, its principal and token are used as they are.
    """
    state = request.state
    principal: TenantPrincipal | None = getattr(state, STATE_PRINCIPAL, None)
    if principal is not None:
        plan = catalog().plan(principal.plan)
        bursting: bool = getattr(state, STATE_BURSTING)
    else:
        key = bearer_token(request)
        # A cache hit costs no I/O; a miss reads DynamoDB, which must not block the event loop.
        principal = cached(key)
        if principal is None:
            principal = await _authenticate(request, key)
        plan = catalog().plan(principal.plan)
        bursting = rate.take_local(principal.tenant_id, plan)
    bind_tenant(principal.tenant_id)
    state.tenant_id = principal.tenant_id
    state.max_in_flight = rate.max_in_flight(plan)
    state.bursting = bursting
    state.pace_s = rate.pace_s(plan)
    note_used(principal.key_id)  # last_used_at, at most once a minute, in the background
    return principal


# event loop -> key -> its lookup under way (a future belongs to one loop)
_lookups: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[str | None, asyncio.Task[TenantPrincipal]]
] = weakref.WeakKeyDictionary()


async def _authenticate(request: Request, key: str | None) -> TenantPrincipal:
    """One lookup of a key not in the cache, shared by the requests that bring the same key
    while it runs: a new key's first burst costs one lookup, not one per request (the answer
    is as fresh as the cache's). A request cancelled meanwhile leaves the lookup to the rest."""
    if on_lambda(request):
        return authenticate(key)
    loop = asyncio.get_running_loop()
    lookups = _lookups.get(loop)
    if lookups is None:
        lookups = _lookups[loop] = {}
    lookup = lookups.get(key)
    if lookup is None:
        lookup = lookups[key] = loop.create_task(run_blocking(request, authenticate, key))
        lookup.add_done_callback(lambda _: lookups.pop(key, None))
    return await asyncio.shield(lookup)
