"""The overage lines of one tenant's period: the one place billing reads prices.

Both the invoice items and ``current.next_invoice`` come from here, and here only from
``logic.usage_query.period_usage``, the code ``GET /v1/usage`` prices with. The invoice is
therefore the estimate the tenant saw, to the cent; a change of pricing there changes both.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from meterbridge.logic.usage_query import period_usage
from meterbridge.models.billing import OverageLine
from meterbridge.models.usage import InvoiceLine, NextInvoice, PartUsage, PeriodUsage
from meterbridge.plans import Plan, catalog
from meterbridge.settings import Settings

# Names a customer reads on the invoice (the catalogue's descriptions are for operators).
METER_LABELS = {"events": "Events", "queries": "Queries", "api_calls": "API calls"}


def _money(cents: int | Decimal) -> str:
    return f"${Decimal(cents) / 100:,.2f}"


def describe(plan: Plan, meter: str, over: float | Decimal, limit: float | Decimal | None) -> str:
    """What the customer reads, e.g. "API calls over 100,000: 1,234,000 x $0.10 / 1,000" (with
    a multiplication sign): the units over the limit, the price, and the block it is per."""
    label = METER_LABELS.get(meter) or meter.replace("_", " ").capitalize()
    rule = plan.overage.get(meter)
    per = getattr(rule, "per_units", None)
    price = getattr(rule, "price_cents", None)
    head = f"{label} over {limit:,}" if limit is not None else f"{label} overage"
    if per is None or price is None:
        return f"{head}: {over:,}"
    unit = "" if per == 1 else f" / {per:,}"
    return f"{head}: {over:,} \u00d7 {_money(price)}{unit}"


def describe_parts(meter: str, parts: list[PartUsage]) -> str:
    """A period split by a plan change, e.g. "Queries, each part with its plan: Basic Dec 1 -
    Dec 15, Queries over 1: 7 x $0.50; Pro Dec 15 - Jan 1, Queries over 5,000: 0 x $0.25"."""
    label = METER_LABELS.get(meter) or meter.replace("_", " ").capitalize()
    pieces = []
    for part in parts:
        plan = catalog().plans.get(part.plan)
        if plan is None:
            continue
        span = f"{part.start:%b %-d} - {part.end:%b %-d}"
        pieces.append(f"{plan.name} {span}, {describe(plan, meter, part.overage, part.limit)}")
    return f"{label}, each part with its plan: " + "; ".join(pieces)


def currency_of(plan: Plan) -> str:
    return str(getattr(plan, "currency", None) or "usd").lower()


def overage_lines(
    tenant_id: str,
    plan: Plan,
    period: str,
    settings: Settings,
    *,
    profile: dict[str, Any] | None = None,
) -> list[OverageLine]:
    """One line per priced meter with a charge above zero for ``period`` (``YYYY-MM``); a
    ``profile`` with plan changes in that period prices each part with its plan."""
    changes = plan_changes(profile)
    return lines_of(plan, period_usage(tenant_id, plan, period, settings, changes=changes))


def plan_changes(profile: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The profile's recorded plan changes (docs/billing.md#plan-changes), oldest first."""
    return list((profile or {}).get("plan_changes") or [])


def lines_of(plan: Plan, usage: PeriodUsage) -> list[OverageLine]:
    lines = []
    for meter in usage.meters:
        cents = int(meter.overage_charge_cents)
        if cents <= 0:
            continue
        if meter.parts:
            description = describe_parts(meter.meter, meter.parts)
        else:
            description = describe(plan, meter.meter, meter.overage, meter.limit)
        lines.append(
            OverageLine(
                meter=meter.meter,
                amount_cents=cents,
                currency=currency_of(plan),
                description=description,
            )
        )
    return lines


def plan_of(profile: dict[str, object]) -> Plan:
    return catalog().plan(str(profile.get("plan") or "free"))


def next_invoice(plan: Plan, usage: PeriodUsage) -> NextInvoice:
    """``current.next_invoice`` of ``GET /v1/usage``: the base price and the overage lines the
    invoice closing ``usage``'s period would carry if it closed now."""
    lines = [
        InvoiceLine(meter=line.meter, description=line.description, amount_cents=line.amount_cents)
        for line in lines_of(plan, usage)
    ]
    base = plan.base_price_cents
    total = None if base is None else base + sum(line.amount_cents for line in lines)
    return NextInvoice(base_price_cents=base, lines=lines, total_cents=total)
