"""Reconciliation: per tenant and meter, the overage metered for a period against what Stripe's
invoice items carry for it (docs/billing.md#reconcile-runbook).

``invoiced_cents`` sums every Stripe invoice item of the tenant's customer whose metadata names
the tenant, the period and the meter, on any invoice (the period's own, a later one's late-usage
line, or a pending item from ``--fix``). ``--fix`` adds each positive difference as a pending
invoice item of the customer (it lands on the next invoice), through the same claimed records
as the webhook, so two runs never bill it twice.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from meterbridge.adapters.stripe_invoices import StripeInvoices, get_invoices
from meterbridge.dal import billing as billing_dal
from meterbridge.dal import tenants as tenants_dal
from meterbridge.errors import UpstreamUnavailable
from meterbridge.logic.billing import invoice as invoice_logic
from meterbridge.logic.billing.overage import overage_lines, plan_of
from meterbridge.logic.periods import bounds
from meterbridge.models.billing import BillingRecord, OverageLine
from meterbridge.models.reconcile import ReconcileReport, ReconcileRow
from meterbridge.observability import metrics, set_gauge
from meterbridge.settings import Settings, get_settings

PAGE = 100


def _tenants(settings: Settings) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    start: dict[str, Any] | None = None
    while True:
        items, start = tenants_dal.list_tenants(settings.tenants_table, limit=PAGE, start_key=start)
        found.extend(items)
        if start is None:
            return found


def _invoiced(stripe: StripeInvoices, customer: str, tenant_id: str, period: str) -> dict[str, int]:
    totals: dict[str, int] = {}
    for item in stripe.invoice_items(customer=customer):
        metadata = item.get("metadata") or {}
        if metadata.get("meterbridge_tenant") == tenant_id and metadata.get("period") == period:
            meter = str(metadata.get("meter"))
            totals[meter] = totals.get(meter, 0) + int(item["amount"])
    return totals


def reconcile(
    period: str, *, fix: bool = False, settings: Settings | None = None
) -> ReconcileReport:
    settings = settings or get_settings()
    bounds(period)  # a clear 400 for a bad period
    stripe = get_invoices(settings)
    if stripe is None:
        raise UpstreamUnavailable("Stripe is not configured (STRIPE_API_KEY); nothing to compare")
    rows: list[ReconcileRow] = []
    fixed: list[str] = []
    for profile in _tenants(settings):
        tenant_id = str(profile["tenant_id"])
        customer = profile.get("stripe_customer_id")
        plan = plan_of(profile)
        metered = {
            line.meter: line
            for line in overage_lines(tenant_id, plan, period, settings, profile=profile)
        }
        invoiced = _invoiced(stripe, str(customer), tenant_id, period) if customer else {}
        for meter in sorted(set(metered) | set(invoiced)):
            cents = metered[meter].amount_cents if meter in metered else 0
            row = ReconcileRow(
                tenant_id=tenant_id,
                meter=meter,
                metered_cents=cents,
                invoiced_cents=invoiced.get(meter, 0),
                difference_cents=cents - invoiced.get(meter, 0),
            )
            if fix and row.difference_cents > 0 and customer:
                fixed.append(_fix(row, metered[meter], str(customer), period, stripe, settings))
                row = row.model_copy(
                    update={"invoiced_cents": row.metered_cents, "difference_cents": 0}
                )
            rows.append(row)
    return ReconcileReport(
        period=period,
        rows=rows,
        difference_cents=sum(r.difference_cents for r in rows),
        unbilled_cents=sum(max(0, r.difference_cents) for r in rows),
        fixed=fixed,
    )


def _fix(
    row: ReconcileRow,
    line: OverageLine,
    customer: str,
    period: str,
    stripe: StripeInvoices,
    settings: Settings,
) -> str:
    """A pending invoice item for the difference, claimed under a key naming what was invoiced
    when it was computed: concurrent runs agree on the key, a later run after more late usage
    makes a new one."""
    target = f"fix-{row.invoiced_cents}"
    start, end = bounds(period)
    record = BillingRecord(
        tenant_id=row.tenant_id,
        period=period,
        meter=row.meter,
        invoice_period=target,
        invoice_id="",
        customer_id=customer,
        amount_cents=row.difference_cents,
        currency=line.currency,
        description=(
            f"Overage for {period} not yet invoiced: {line.description}"
            if not row.invoiced_cents
            else f"Late usage for {period}: {line.description}, less "
            f"${row.invoiced_cents / 100:,.2f} already billed"
        ),
        period_start=int(start.timestamp()),
        period_end=int(end.timestamp()),
        idempotency_key=invoice_logic.idempotency_key(row.tenant_id, period, row.meter, target),
        claimed_at=invoice_logic._now(),
    )
    if not billing_dal.claim(settings.usage_table, record):
        existing = billing_dal.find(settings.usage_table, row.tenant_id, period, row.meter, target)
        if existing is None:  # refused, yet not there: nothing to resume
            raise RuntimeError(f"billing record {target} of {row.tenant_id} vanished")
        if existing.state == "billed":
            return str(existing.item_id)
        record = existing
    return invoice_logic.resume(record, stripe, settings)


def publish_unbilled(report: ReconcileReport) -> None:
    """The alarm metric: CloudWatch ``BillingUnbilledCents`` (EMF, flushed by the Lambda) and
    Prometheus ``meterbridge_billing_unbilled_cents`` (the local stack's ``/metrics``)."""

    metrics.add_metric(
        name="BillingUnbilledCents", unit=MetricUnit.Count, value=report.unbilled_cents
    )
    set_gauge("billing_unbilled_cents", report.unbilled_cents, period=report.period)
