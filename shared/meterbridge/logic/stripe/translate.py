"""Stripe events to meterbridge billing changes (pure: no I/O).

Six Stripe types are translated (reference documents, seed 002); every other type is ignored:

=============================== ======================= =========================================
Stripe event                    CloudEvent type         Tenant state change
=============================== ======================= =========================================
checkout.session.completed      subscription.started    link the Checkout's customer to the tenant
customer.subscription.created   subscription.started    subscription state; plan from the price
customer.subscription.updated   subscription.updated    subscription state; plan from the price
customer.subscription.deleted   subscription.ended      plan back to ``free``
invoice.paid                    payment.success         reset failed payments; resume
invoice.payment_failed          payment.failed          count a failed payment; suspend at 3
=============================== ======================= =========================================

A Checkout counts only in ``mode: subscription``: payment and setup Checkouts are ignored (a
one-off payment is no subscription start).

Field locations follow the pinned API version (``stripe.api_version``): an invoice's
subscription is under ``parent.subscription_details``, a line's price under
``pricing.price_details``, and a subscription's prices under ``items.data[].price``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from meterbridge.models.stripe import BillingChange, StripeEvent
from meterbridge.plans import catalog
from meterbridge.runtime.lazy import LazyLoader

if TYPE_CHECKING:
    import stripe
else:
    stripe = LazyLoader("stripe", globals(), "stripe")

SUBSCRIPTION_STARTED = "subscription.started"
SUBSCRIPTION_UPDATED = "subscription.updated"
SUBSCRIPTION_ENDED = "subscription.ended"
PAYMENT_SUCCESS = "payment.success"
PAYMENT_FAILED = "payment.failed"

TRANSLATIONS: dict[str, str] = {
    "checkout.session.completed": SUBSCRIPTION_STARTED,
    "customer.subscription.created": SUBSCRIPTION_STARTED,
    "customer.subscription.updated": SUBSCRIPTION_UPDATED,
    "customer.subscription.deleted": SUBSCRIPTION_ENDED,
    "invoice.paid": PAYMENT_SUCCESS,
    "invoice.payment_failed": PAYMENT_FAILED,
}

# Statuses that keep the paid plan (past_due/unpaid are left to the failed-payment count).
PLAN_STATUSES = frozenset({"active", "trialing", "past_due", "unpaid"})
# Statuses after which the subscription gives nothing: the tenant falls back to free.
ENDED_STATUSES = frozenset({"canceled", "incomplete_expired", "paused"})
FREE_PLAN = "free"

# Tie-break inside one second of ``created``: later lifecycle steps win.
_TYPE_RANK = {
    "customer.subscription.created": 1,
    "customer.subscription.updated": 2,
    "customer.subscription.deleted": 3,
}


def pinned_api_version() -> str:
    """The Stripe API version the translations read fields for: the pinned stripe-python's."""

    return str(stripe.api_version)


def unhandled(payload: Mapping[str, Any]) -> str | None:
    """Why a verified payload is acknowledged without processing, or None to process it.

    Thin events (``object: v2.core.event``, from event destinations) carry no snapshot to
    translate; other types are not billing events for meterbridge. Both get 200 ``ignored``
    (Stripe retries any non-2xx for days).
    """
    if payload.get("object") != "event":
        return f"thin or unknown payload ({str(payload.get('object'))[:40]})"
    if payload.get("type") not in TRANSLATIONS:
        return "type not handled"
    return None


def _id_of(value: Any) -> str | None:
    """A Stripe reference: an id string, or an expanded object's ``id``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return value["id"]
    return None


def _metadata_tenant(*metadatas: Any) -> str | None:
    for metadata in metadatas:
        if isinstance(metadata, dict) and metadata.get("tenant_id"):
            return str(metadata["tenant_id"])
    return None


def _subscription_price(subscription: dict[str, Any]) -> str | None:
    items = (subscription.get("items") or {}).get("data") or []
    for item in items:
        price = _id_of(item.get("price"))
        if price:
            return price
    return None


def _invoice_subscription(invoice: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    return _id_of(details.get("subscription")), details.get("metadata") or {}


def _invoice_price(invoice: dict[str, Any]) -> str | None:
    for line in (invoice.get("lines") or {}).get("data") or []:
        price = _id_of(((line.get("pricing") or {}).get("price_details") or {}).get("price"))
        if price:
            return price
    return None


def _subscription_lookup_key(subscription: dict[str, Any]) -> str | None:
    for item in (subscription.get("items") or {}).get("data") or []:
        price = item.get("price")
        if isinstance(price, dict) and isinstance(price.get("lookup_key"), str):
            return str(price["lookup_key"])
    return None


def plan_for(
    price_id: str | None, status: str | None, ended: bool, lookup_key: str | None = None
) -> str | None:
    """The tenant plan a subscription state gives, or None to leave the plan unchanged."""
    if ended or status in ENDED_STATUSES:
        return FREE_PLAN
    if status not in PLAN_STATUSES or not price_id:
        return None
    plan = catalog().plan_for_price(price_id, lookup_key)
    return plan.id if plan else None


def translate(event: StripeEvent) -> BillingChange | None:
    """The billing change of ``event``, or None for a type meterbridge ignores."""
    billing_type = TRANSLATIONS.get(event.type)
    if billing_type is None:
        return None
    obj = event.data.object
    base: dict[str, Any] = {
        "stripe_event_id": event.id,
        "stripe_type": event.type,
        "billing_type": billing_type,
        "created": event.created,
        "customer_id": _id_of(obj.get("customer")),
        "api_version": event.api_version,
    }
    if event.type == "checkout.session.completed":
        # Only a subscription-mode Checkout starts a subscription; a one-off payment or a
        # saved card (modes payment, setup) is not a billing event for meterbridge.
        if obj.get("mode") != "subscription":
            return None
        return _checkout(obj, base)
    if event.type.startswith("customer.subscription."):
        return _subscription(event, obj, base)
    return _invoice(event, obj, base)


def _checkout(obj: dict[str, Any], base: dict[str, Any]) -> BillingChange:
    subscription_id = _id_of(obj.get("subscription"))
    return BillingChange(
        **base,
        action="checkout",
        tenant_hint=_metadata_tenant(obj.get("metadata")) or obj.get("client_reference_id"),
        subscription_id=subscription_id,
        checkout_session_id=obj.get("id"),
        data={
            "stripe_event_type": base["stripe_type"],
            "customer": base["customer_id"],
            "subscription": subscription_id,
            "checkout_session": obj.get("id"),
            "mode": obj.get("mode"),
            "amount": obj.get("amount_total"),
            "currency": obj.get("currency"),
            "status": obj.get("payment_status"),
        },
    )


def _subscription(event: StripeEvent, obj: dict[str, Any], base: dict[str, Any]) -> BillingChange:
    status = obj.get("status")
    ended = event.type == "customer.subscription.deleted"
    price_id = _subscription_price(obj)
    plan = plan_for(price_id, status, ended, _subscription_lookup_key(obj))
    terminal = ended or status in ENDED_STATUSES
    previous = event.data.previous_attributes or {}
    return BillingChange(
        **base,
        action="subscription",
        tenant_hint=_metadata_tenant(obj.get("metadata")),
        subscription_id=obj.get("id"),
        subscription_status=status,
        price_id=price_id,
        plan=plan,
        ends_subscription=terminal,
        rank=_TYPE_RANK[event.type] + (10 if terminal else 0),
        data={
            "stripe_event_type": event.type,
            "customer": base["customer_id"],
            "subscription": obj.get("id"),
            "status": status,
            "price": price_id,
            "plan": plan,
            "currency": obj.get("currency"),
            "cancel_at_period_end": obj.get("cancel_at_period_end"),
            "previous_status": previous.get("status"),
        },
    )


def _invoice(event: StripeEvent, obj: dict[str, Any], base: dict[str, Any]) -> BillingChange:
    subscription_id, sub_metadata = _invoice_subscription(obj)
    paid = event.type == "invoice.paid"
    price_id = _invoice_price(obj)
    plan = catalog().plan_for_price(price_id) if price_id else None
    return BillingChange(
        **base,
        action="payment_paid" if paid else "payment_failed",
        tenant_hint=_metadata_tenant(sub_metadata, obj.get("metadata")),
        subscription_id=subscription_id,
        price_id=price_id,
        invoice_id=obj.get("id"),
        data={
            "stripe_event_type": event.type,
            "customer": base["customer_id"],
            "subscription": subscription_id,
            "invoice": obj.get("id"),
            "plan": plan.id if plan else None,
            "price": price_id,
            "amount": obj.get("amount_paid") if paid else obj.get("amount_due"),
            "currency": obj.get("currency"),
            "status": obj.get("status"),
            "attempt_count": obj.get("attempt_count"),
            "billing_reason": obj.get("billing_reason"),
        },
    )
