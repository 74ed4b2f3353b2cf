"""The usage summary: per meter used, limit, remaining, overage, and the estimated charge."""

from __future__ import annotations

from datetime import UTC, datetime

from meterbridge.dal import usage as usage_dal
from meterbridge.logic.periods import bounds, month_range, period_of
from meterbridge.models.usage import MeterUsage, PeriodUsage, UsageReport
from meterbridge.plans import Plan, catalog
from meterbridge.settings import Settings, get_settings


def period_usage(tenant_id: str, plan: Plan, period: str, settings: Settings) -> PeriodUsage:
    meters = []
    overage_total = 0
    for meter in catalog().meters:
        used = usage_dal.used(settings.usage_table, tenant_id, period, meter)
        limit = plan.limit(meter)
        overage = max(0, used - limit) if limit is not None and not plan.hard_limit else 0
        charge = plan.overage_cents(meter, used)
        overage_total += charge
        meters.append(
            MeterUsage(
                meter=meter,
                used=used,
                limit=limit,
                remaining=None if limit is None else max(0, limit - used),
                overage=overage,
                overage_charge_cents=charge,
            )
        )
    start, end = bounds(period)
    estimate = None if plan.base_price_cents is None else plan.base_price_cents + overage_total
    return PeriodUsage(
        period=period,
        start=start,
        end=end,
        plan=plan.id,
        hard_limit=plan.hard_limit,
        base_price_cents=plan.base_price_cents,
        meters=meters,
        estimated_charge_cents=estimate,
    )


def _first_period(tenant_id: str, settings: Settings) -> str | None:
    """The period the tenant was created in (YYYY-MM), if its profile says."""
    from meterbridge.dal import tenants as tenants_dal

    profile = tenants_dal.get_tenant(settings.tenants_table, tenant_id)
    created = str((profile or {}).get("created_at") or "")
    return created[:7] if len(created) >= 7 else None


def usage_report(
    tenant_id: str,
    plan_id: str,
    *,
    first: str | None = None,
    last: str | None = None,
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
    periods: list[PeriodUsage] = []
    if first or last:
        since = _first_period(tenant_id, settings)
        for period in month_range(first or last or current, last or current):
            if since is None or period >= since:
                periods.append(period_usage(tenant_id, plan, period, settings))
    from meterbridge.logic.billing.overage import next_invoice

    now_usage = period_usage(tenant_id, plan, current, settings)
    return UsageReport(
        tenant_id=tenant_id,
        current=now_usage.model_copy(update={"next_invoice": next_invoice(plan, now_usage)}),
        periods=periods,
    )
