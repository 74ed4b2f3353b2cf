"""The FastAPI dependency that turns ``Authorization: Bearer <key>`` into a tenant."""

from __future__ import annotations

from fastapi import Request

from meterbridge.api.admin_auth import bearer_token
from meterbridge.logic.auth import TenantPrincipal, authenticate
from meterbridge.observability import bind_tenant


async def require_tenant(request: Request) -> TenantPrincipal:
    """The calling tenant (401/403 otherwise); its id is on every log line from here on."""
    principal = authenticate(bearer_token(request))
    bind_tenant(principal.tenant_id)
    request.state.tenant_id = principal.tenant_id
    return principal
