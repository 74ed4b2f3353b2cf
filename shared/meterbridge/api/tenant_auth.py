"""The FastAPI dependency that turns ``Authorization: Bearer <key>`` into a tenant."""

# No ``from __future__ import annotations``: FastAPI would evaluate each route's and
# dependency's annotation strings when it builds the routes at import (cold start).
from fastapi import Request

from meterbridge.api.admin_auth import bearer_token
from meterbridge.api.admission import STATE_BURSTING, STATE_PRINCIPAL
from meterbridge.api.blocking import run_blocking
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
            principal = await run_blocking(request, authenticate, key)
        plan = catalog().plan(principal.plan)
        bursting = rate.take_local(principal.tenant_id, plan)
    bind_tenant(principal.tenant_id)
    state.tenant_id = principal.tenant_id
    state.max_in_flight = rate.max_in_flight(plan)
    state.bursting = bursting
    state.pace_s = rate.pace_s(plan)
    note_used(principal.key_id)  # last_used_at, at most once a minute, in the background
    return principal
