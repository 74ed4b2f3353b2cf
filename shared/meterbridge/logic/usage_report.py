"""``GET /v1/usage``: the current period with its next invoice, and past periods when asked.

Apart from ``usage_query`` (one period's usage and price), which the invoice's overage lines
(``logic.billing.overage``) read too: this module sits above both, so neither imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from meterbridge.dal import tenants as tenants_dal
from meterbridge.logic.periods import month_range, period_of
from meterbridge.logic.usage_query import period_usage
from meterbridge.models.usage import PeriodUsage, UsageReport
from meterbridge.plans import catalog
from meterbridge.runtime.lazy import LazyLoader
from meterbridge.settings import Settings, get_settings

if TYPE_CHECKING:  # pragma: no cover
    from meterbridge.logic.billing import overage
else:  # the next invoice: GET /v1/usage only, not the usage API's init
    overage = LazyLoader("overage", globals(), "meterbridge.logic.billing.overage")


def _plan_changes(tenant_id: str, settings: Settings) -> list[Any]:
    """The tenant's recorded plan changes (docs/billing.md#plan-changes)."""
    profile = tenants_dal.get_tenant(settings.tenants_table, tenant_id)
    return list((profile or {}).get("plan_changes") or [])


def _first_period(tenant_id: str, settings: Settings) -> str | None:
    """The period the tenant was created in (YYYY-MM), if its profile says."""
    profile = tenants_dal.get_tenant(settings.tenants_table, tenant_id)
    created = str((profile or {}).get("created_at") or "")
    return created[:7] if len(created) >= 7 else None


def usage_report(
    tenant_id: str,
    plan_id: str,
    *,
    first: str | None = None,
    last: str | None = None,
    group_by: Sequence[str] = (),
    settings: Settings | None = None,
    now: datetime | None = None,
) -> UsageReport:
    """The current period, and past periods ``first``..``last`` (YYYY-MM) when asked.

    Past periods are priced with the tenant's current plan: the plan history lives in Stripe's
    invoices, which are the record for what was billed. Periods that ended before the tenant
    existed are left out: nothing was billed for them, so nothing is priced.
    """
    settings = settings or get_settings()
    plan = catalog().plan(plan_id)
    current = period_of(now or datetime.now(UTC))
    changes = _plan_changes(tenant_id, settings)
    periods: list[PeriodUsage] = []
    if first or last:
        since = _first_period(tenant_id, settings)
        for period in month_range(first or last or current, last or current):
            if since is None or period >= since:
                periods.append(period_usage(tenant_id, plan, period, settings, changes=changes))
    now_usage = period_usage(tenant_id, plan, current, settings, group_by, changes=changes)
    next_invoice = overage.next_invoice(plan, now_usage)
    return UsageReport(
        tenant_id=tenant_id,
        current=now_usage.model_copy(update={"next_invoice": next_invoice}),
        periods=periods,
    )
