"""The final invoice of an offboarded tenant (docs/billing.md#offboarding).

Offboarding bills the last, partial period P (the period offboarding began in) before the
subscription is cancelled: a one-off draft invoice for the customer, tagged
``meterbridge_final_period = P``, gets P's overage lines (and any late usage of the two periods
before it) through the same claimed records and idempotency keys as a cycle invoice, then is
finalized. Every step finds what an earlier attempt did before doing it again: the draft by its
metadata (beyond Stripe's 24-hour idempotency window), the items by their records, a finalized
invoice is left alone. So a retried or crashed offboarding never bills a line twice.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from meterbridge.adapters.stripe_invoices import StripeInvoices, get_invoices
from meterbridge.logic.billing.invoice import (
    CATCH_UP_PERIODS,
    plan_records,
    previous_period,
    resume,
)
from meterbridge.logic.billing.overage import overage_lines, plan_of
from meterbridge.logic.periods import period_of
from meterbridge.observability import logger
from meterbridge.settings import Settings

FINAL_TAG = "meterbridge_final_period"


def final_period(profile: dict[str, Any], now: datetime | None = None) -> str:
    """The period the final invoice closes: the one offboarding first began in (kept in the
    profile's ``offboarding_at``), so a retry after the month turned still bills that one."""
    began = profile.get("offboarding_at")
    if began:
        return period_of(datetime.fromisoformat(str(began).replace("Z", "+00:00")))
    return period_of(now or datetime.now(UTC))


def _find_final(stripe: StripeInvoices, customer: str, period: str) -> dict[str, Any] | None:
    for invoice in stripe.invoices(customer):
        if (invoice.get("metadata") or {}).get(FINAL_TAG) == period:
            return invoice
    return None


def _anything_to_bill(
    tenant_id: str, profile: dict[str, Any], period: str, settings: Settings
) -> bool:
    plan = plan_of(profile)
    periods = [period]
    for _ in range(CATCH_UP_PERIODS):
        periods.append(previous_period(periods[-1]))
    return any(overage_lines(tenant_id, plan, p, settings, profile=profile) for p in periods)


def bill_final_period(profile: dict[str, Any], settings: Settings) -> str | None:
    """Bill ``profile``'s last period on a finalized final invoice; its id, or None when there
    is no Stripe customer or nothing to bill."""
    stripe = get_invoices(settings)
    customer = profile.get("stripe_customer_id")
    if stripe is None or not customer:
        return None
    tenant_id = str(profile["tenant_id"])
    period = final_period(profile)
    invoice = _find_final(stripe, str(customer), period)
    if invoice is None:
        if not _anything_to_bill(tenant_id, profile, period, settings):
            return None
        invoice = stripe.create_invoice(
            {
                "customer": str(customer),
                "auto_advance": False,  # finalized below, once its items are on it
                "collection_method": "charge_automatically",
                "pending_invoice_items_behavior": "exclude",
                "description": f"Final invoice: usage for {period} up to offboarding",
                "metadata": {"meterbridge_tenant": tenant_id, FINAL_TAG: period},
            },
            f"mb-final-invoice-{tenant_id}-{period}",
        )
    invoice_id = str(invoice["id"])
    if invoice.get("status") != "draft":
        return invoice_id  # an earlier attempt finished it
    records = plan_records(tenant_id, plan_of(profile), period, invoice, settings, stripe, profile)
    items = [resume(record, stripe, settings) for record in records]
    stripe.finalize_invoice(invoice_id, f"mb-final-finalize-{tenant_id}-{period}")
    logger.info(
        "final invoice billed",
        extra={
            "tenant_id": tenant_id,
            "period": period,
            "invoice": invoice_id,
            "items": len(items),
        },
    )
    return invoice_id
