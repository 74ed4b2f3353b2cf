"""Overage on the cycle invoice, exactly once (docs/billing.md#exactly-once).

``invoice.created`` for a ``subscription_cycle`` draft closes period P (its ``period_start``).
This adds one invoice item per priced meter with overage for P, and for the two periods before
P the difference between their overage now and what is already recorded (late usage, or an
invoice that was finalized before its items were added). Each line is a record in the usage
table: claimed ``pending`` before the Stripe call, ``billed`` after it. A redelivery resumes a
``pending`` record: it looks for the item on the invoice by metadata, else repeats the call with
the same idempotency key and parameters, so a crash between the call and the record never
duplicates the item.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from meterbridge.adapters.stripe_invoices import StripeInvoices, get_invoices
from meterbridge.dal import billing as billing_dal
from meterbridge.dal import tenant_state
from meterbridge.logic.billing.overage import _money, overage_lines, plan_of
from meterbridge.logic.periods import bounds, period_of
from meterbridge.models.billing import BillingRecord, InvoiceBilling
from meterbridge.observability import logger
from meterbridge.plans import Plan
from meterbridge.settings import Settings

# Late events are accepted for 35 days: at most two closed periods before P can still change.
CATCH_UP_PERIODS = 2


def previous_period(period: str) -> str:
    start, _ = bounds(period)
    year, month = (start.year, start.month - 1) if start.month > 1 else (start.year - 1, 12)
    return f"{year:04d}-{month:02d}"


def idempotency_key(tenant_id: str, period: str, meter: str, invoice_period: str) -> str:
    return f"mb-overage-{tenant_id}-{period}-{meter}-on-{invoice_period}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def on_invoice_created(invoice: dict[str, Any], settings: Settings) -> InvoiceBilling:
    """Bill the overage the cycle invoice ``invoice`` (an event snapshot) closes."""
    if invoice.get("billing_reason") != "subscription_cycle":
        return InvoiceBilling("ignored", "not a subscription cycle invoice")
    customer = invoice.get("customer")
    customer_id = customer.get("id") if isinstance(customer, dict) else customer
    if not customer_id or not isinstance(invoice.get("period_start"), int):
        return InvoiceBilling("ignored", "no customer or period")
    profile = tenant_state.find_by_customer(settings.tenants_table, str(customer_id))
    if profile is None:
        return InvoiceBilling("unmatched", "no tenant owns the customer")
    tenant_id = str(profile["tenant_id"])
    stripe = get_invoices(settings)
    if stripe is None:
        return InvoiceBilling("ignored", "Stripe is not configured", tenant_id)
    period = period_of(datetime.fromtimestamp(int(invoice["period_start"]), UTC))
    # The snapshot may be old (a late redelivery): only a live draft takes items.
    live = stripe.invoice(str(invoice["id"]))
    if live.get("status") != "draft":
        return InvoiceBilling(
            "ignored", "the invoice is no longer a draft; the next one catches up", tenant_id
        )
    plan = plan_of(profile)
    records = plan_records(tenant_id, plan, period, live, settings, stripe, profile)
    items = [resume(record, stripe, settings) for record in records]
    return InvoiceBilling("applied", "", tenant_id, period, items)


def plan_records(
    tenant_id: str,
    plan: Plan,
    invoice_period: str,
    invoice: dict[str, Any],
    settings: Settings,
    stripe: StripeInvoices,
    profile: dict[str, Any] | None = None,
) -> list[BillingRecord]:
    """The records (claimed now or pending from an earlier delivery) this invoice should carry."""
    table = settings.usage_table
    wanted: list[BillingRecord] = []
    periods = [invoice_period]
    for _ in range(CATCH_UP_PERIODS):
        periods.append(previous_period(periods[-1]))
    for period in periods:
        for line in overage_lines(tenant_id, plan, period, settings, profile=profile):
            existing = billing_dal.records(table, tenant_id, period, line.meter)
            mine = next((r for r in existing if r.invoice_period == invoice_period), None)
            if mine is not None:
                if mine.state == "pending":
                    wanted.append(mine)
                continue
            others = [r for r in existing if r.invoice_period != invoice_period]
            already = sum(_counted(r, stripe, settings) for r in others)
            difference = line.amount_cents - already
            if difference <= 0:
                continue
            if period == invoice_period:
                description = line.description
            elif already:
                description = (
                    f"Late usage for {period}: {line.description}, "
                    f"less {_money(already)} already billed"
                )
            else:
                description = f"Overage for {period} (not on its own invoice): {line.description}"
            start, end = bounds(period)
            record = BillingRecord(
                tenant_id=tenant_id,
                period=period,
                meter=line.meter,
                invoice_period=invoice_period,
                invoice_id=str(invoice["id"]),
                customer_id=str(invoice["customer"]),
                amount_cents=difference,
                currency=line.currency,
                description=description,
                period_start=int(start.timestamp()),
                period_end=int(end.timestamp()),
                idempotency_key=idempotency_key(tenant_id, period, line.meter, invoice_period),
                claimed_at=_now(),
            )
            if billing_dal.claim(table, record):
                wanted.append(record)
                continue
            # A concurrent delivery claimed it first: take its record (same key, same call).
            raced = billing_dal.find(table, tenant_id, period, line.meter, invoice_period)
            if raced is not None and raced.state == "pending":
                wanted.append(raced)
    return wanted


def _counted(record: BillingRecord, stripe: StripeInvoices, settings: Settings) -> int:
    """The cents a record on another invoice stands for: billed counts; pending counts only if
    Stripe has the item (then it is marked billed); a pending line whose invoice is no longer a
    draft and has no item was never billed, and counts nothing."""
    if record.state == "billed":
        return record.amount_cents
    found = find_item(record, stripe)
    if found:
        billing_dal.mark_billed(settings.usage_table, record, found, _now())
        return record.amount_cents
    if not record.invoice_id:
        return 0  # a reconcile --fix that never reached Stripe: nothing was invoiced
    if stripe.invoice(record.invoice_id).get("status") == "draft":
        return record.amount_cents  # its own delivery may still complete it
    return 0


def item_metadata(record: BillingRecord) -> dict[str, str]:
    return {
        "meterbridge_tenant": record.tenant_id,
        "period": record.period,
        "meter": record.meter,
        "meterbridge_invoice_period": record.invoice_period,
    }


def find_item(record: BillingRecord, stripe: StripeInvoices) -> str | None:
    """The id of the item this record already made on its invoice, if any."""
    wanted = item_metadata(record)
    # A pending item (reconcile --fix) may have moved onto an invoice since: search the customer.
    where = (
        {"invoice": record.invoice_id} if record.invoice_id else {"customer": record.customer_id}
    )
    for item in stripe.invoice_items(**where):
        metadata = item.get("metadata") or {}
        if all(metadata.get(k) == v for k, v in wanted.items()):
            return str(item["id"])
    return None


def item_params(record: BillingRecord) -> dict[str, Any]:
    params: dict[str, Any] = {
        "customer": record.customer_id,
        "amount": record.amount_cents,
        "currency": record.currency,
        "description": record.description,
        "metadata": item_metadata(record),
        "period": {"start": record.period_start, "end": record.period_end},
    }
    if record.invoice_id:
        params["invoice"] = record.invoice_id
    return params


def resume(record: BillingRecord, stripe: StripeInvoices, settings: Settings) -> str:
    """Make the record's invoice item exist exactly once, then mark the record billed."""
    item_id = find_item(record, stripe)
    if item_id is None:
        item_id = stripe.create_invoice_item(item_params(record), record.idempotency_key)
    billing_dal.mark_billed(settings.usage_table, record, item_id, _now())
    logger.info(
        "overage billed",
        extra={
            "tenant_id": record.tenant_id,
            "period": record.period,
            "meter": record.meter,
            "invoice_period": record.invoice_period,
            "amount_cents": record.amount_cents,
            "stripe_item": item_id,
        },
    )
    return item_id
