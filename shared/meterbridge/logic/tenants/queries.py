"""Reading tenants: one by id, or a filtered page of all of them."""

from __future__ import annotations

from meterbridge.dal import tenants as tenants_dal
from meterbridge.errors import NotFound
from meterbridge.models.tenant import Tenant, TenantPage
from meterbridge.settings import Settings, get_settings

# Profiles read per page while filtering a list (a short list still reads a useful page).
MIN_BATCH = 25


def get_tenant(tenant_id: str, settings: Settings | None = None) -> Tenant:
    settings = settings or get_settings()
    tenant = tenants_dal.repository(settings).get(tenant_id)
    if tenant is None:
        raise NotFound(f"tenant {tenant_id} not found")
    return tenant


def list_tenants(
    *,
    status: str | None = None,
    plan: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
    settings: Settings | None = None,
) -> TenantPage:
    """Tenants oldest first, filtered by status and plan; ``next_cursor`` continues the list."""
    settings = settings or get_settings()
    found: list[Tenant] = []
    scan = tenants_dal.repository(settings).scan(cursor, batch=max(limit, MIN_BATCH))
    for tenant, after in scan:
        if (status and tenant.status != status) or (plan and tenant.plan != plan):
            continue
        found.append(tenant)
        if len(found) == limit:
            # Continue after this tenant, not after the page: the rest of the page is unseen.
            return TenantPage(items=found, next_cursor=after)
    return TenantPage(items=found, next_cursor=None)
