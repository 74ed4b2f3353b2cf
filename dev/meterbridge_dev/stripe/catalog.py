"""``meterbridge stripe sync-catalog``: plans.json's priced plans as Stripe products and monthly
prices, found by lookup key ``meterbridge_<plan id>`` (docs/billing.md#prices-in-stripe).

Idempotent: a product has the deterministic id ``meterbridge_<plan id>``; a price that already
matches (amount, currency, monthly, active, product) is left alone, so a run against a Stripe
that agrees writes nothing. Stripe prices are immutable: a changed amount makes a new price that
takes over the lookup key (``transfer_lookup_key``); subscriptions on the old one keep it until
their plan is changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meterbridge.errors import UpstreamUnavailable
from meterbridge.logic.billing.overage import currency_of
from meterbridge.plans import Plan, catalog
from meterbridge.settings import Settings, get_settings
from meterbridge_dev.stripe.prices import StripePrices


@dataclass(frozen=True)
class CatalogChange:
    plan: str
    action: str  # create_product | update_product | create_price
    detail: str


def lookup_key(plan_id: str) -> str:
    return f"meterbridge_{plan_id}"


def product_id(plan_id: str) -> str:
    return f"meterbridge_{plan_id}"


def _price_agrees(price: dict[str, Any] | None, plan: Plan) -> bool:
    if price is None:
        return False
    recurring = price.get("recurring") or {}
    return (
        bool(price.get("active"))
        and price.get("unit_amount") == plan.base_price_cents
        and price.get("currency") == currency_of(plan)
        and recurring.get("interval") == "month"
        and int(recurring.get("interval_count") or 1) == 1
        and price.get("product") == product_id(plan.id)
    )


def sync_catalog(*, dry_run: bool = False, settings: Settings | None = None) -> list[CatalogChange]:
    settings = settings or get_settings()
    if not settings.stripe_api_key:
        raise UpstreamUnavailable("Stripe is not configured (STRIPE_API_KEY)")
    stripe = StripePrices(settings.stripe_api_key, settings.stripe_api_base)
    plans = [p for p in catalog().plans.values() if (p.base_price_cents or 0) > 0]
    prices = stripe.prices_by_lookup_key([lookup_key(p.id) for p in plans])
    changes: list[CatalogChange] = []
    for plan in plans:
        changes += _sync_plan(plan, prices.get(lookup_key(plan.id)), stripe, dry_run)
    return changes


def _sync_plan(
    plan: Plan, price: dict[str, Any] | None, stripe: StripePrices, dry_run: bool
) -> list[CatalogChange]:
    changes: list[CatalogChange] = []
    name = f"meterbridge {plan.name}"
    product = stripe.product(product_id(plan.id))
    if product is None:
        changes.append(CatalogChange(plan.id, "create_product", name))
        if not dry_run:
            stripe.create_product(
                {
                    "id": product_id(plan.id),
                    "name": name,
                    "metadata": {"meterbridge_plan": plan.id},
                },
                f"mb-product-{plan.id}",
            )
    elif product.get("name") != name:
        changes.append(CatalogChange(plan.id, "update_product", name))
        if not dry_run:
            stripe.update_product(product_id(plan.id), {"name": name})
    if not _price_agrees(price, plan):
        amount, currency = int(plan.base_price_cents or 0), currency_of(plan)
        changes.append(CatalogChange(plan.id, "create_price", f"{amount} {currency} monthly"))
        if not dry_run:
            stripe.create_price(
                {
                    "product": product_id(plan.id),
                    "unit_amount": amount,
                    "currency": currency,
                    "recurring": {"interval": "month"},
                    "lookup_key": lookup_key(plan.id),
                    "transfer_lookup_key": True,
                    "metadata": {"meterbridge_plan": plan.id},
                },
                f"mb-price-{plan.id}-{amount}-{currency}",
            )
    return changes
