"""The billing gateway (customers and subscriptions) and its Stripe adapter.

Every mutating call carries an idempotency key derived from the tenant (``mb-customer-<id>``,
``mb-subscription-<id>``, ...), so a retried provisioning or plan change never makes a second
customer or subscription even when our own record of the first one was lost.

The client does not retry by itself (``max_network_retries=0``): a failed step fails the admin
request fast with a 502, and the caller retries the whole request with the same
``Idempotency-Key``, which resumes at the failed step. Stripe errors become
``UpstreamUnavailable``; their messages never carry the API key.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from meterbridge import plans
from meterbridge.adapters import stripe_client
from meterbridge.errors import PriceMissing, UpstreamUnavailable
from meterbridge.runtime.lazy import LazyLoader
from meterbridge.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    import stripe
else:
    stripe = LazyLoader("stripe", globals(), "stripe")

T = TypeVar("T")
# Every subscription renews at 00:00:00 UTC on the 1st: its invoice periods are calendar months.
ANCHOR_CONFIG = {"day_of_month": 1, "hour": 0, "minute": 0, "second": 0}
CALENDAR_MONTH_ANCHOR: dict[str, Any] = {
    "billing_cycle_anchor_config": ANCHOR_CONFIG,
    "proration_behavior": "create_prorations",
}


class BillingGateway(Protocol):
    """What tenant provisioning needs from a billing provider."""

    def create_customer(
        self, *, tenant_id: str, name: str, email: str, idempotency_key: str
    ) -> str: ...

    def create_subscription(
        self, *, tenant_id: str, customer_id: str, price_id: str, idempotency_key: str
    ) -> str: ...

    def change_price(
        self, *, subscription_id: str, price_id: str, idempotency_key: str
    ) -> None: ...

    def cancel_subscription(self, *, subscription_id: str, idempotency_key: str) -> None: ...

    def price_for_lookup_key(self, lookup_key: str) -> str | None: ...


def plan_price(gateway: BillingGateway, plan_id: str) -> str | None:
    """The Stripe price a plan subscribes to: the active one holding lookup key
    ``meterbridge_<plan id>`` (docs/billing.md#prices-in-stripe). None: the plan has no base
    price (free, custom). A priced plan without its price in Stripe is refused with the key and
    the command that creates it: no placeholder price id stands in."""
    plan = plans.catalog().plan(plan_id)
    if not plan.base_price_cents:
        return None
    lookup_key = f"meterbridge_{plan_id}"
    price = gateway.price_for_lookup_key(lookup_key)
    if price is None:
        raise PriceMissing(
            f"Stripe has no active price with lookup key {lookup_key!r} for plan {plan_id!r}; "
            "run meterbridge stripe sync-catalog",
            details={"lookup_key": lookup_key, "plan": plan_id},
        )
    return price


class StripeBilling:
    """``BillingGateway`` on the real ``stripe`` client (``STRIPE_API_BASE``: e.g. a fake)."""

    def __init__(self, api_key: str, api_base: str = "") -> None:
        self._stripe = stripe
        self._client = stripe_client.client(api_key, api_base)

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        return stripe_client.call(
            what, fn, advice="retry the request with the same Idempotency-Key", retry_after=2
        )

    def create_customer(
        self, *, tenant_id: str, name: str, email: str, idempotency_key: str
    ) -> str:
        customer = self._call(
            "create the customer",
            lambda: self._client.v1.customers.create(
                params={"name": name, "email": email, "metadata": {"tenant_id": tenant_id}},
                options={"idempotency_key": idempotency_key},
            ),
        )
        return str(customer.id)

    def create_subscription(
        self, *, tenant_id: str, customer_id: str, price_id: str, idempotency_key: str
    ) -> str:
        subscription = self._call(
            "create the subscription",
            lambda: self._client.v1.subscriptions.create(
                params={
                    "customer": customer_id,
                    "items": [{"price": price_id}],
                    "metadata": {"tenant_id": tenant_id},
                    # The period rule (docs/billing.md): Stripe's periods are meterbridge's
                    # calendar months (UTC), the first one prorated.
                    "billing_cycle_anchor_config": {
                        "day_of_month": ANCHOR_CONFIG["day_of_month"],
                        "hour": ANCHOR_CONFIG["hour"],
                        "minute": ANCHOR_CONFIG["minute"],
                        "second": ANCHOR_CONFIG["second"],
                    },
                    "proration_behavior": "create_prorations",
                },
                options={"idempotency_key": idempotency_key},
            ),
        )
        return str(subscription.id)

    def change_price(self, *, subscription_id: str, price_id: str, idempotency_key: str) -> None:
        subscription = self._call(
            "read the subscription",
            lambda: self._client.v1.subscriptions.retrieve(subscription_id),
        )
        items: Any = subscription["items"]
        item_id = items.data[0].id
        self._call(
            "change the subscription's price",
            lambda: self._client.v1.subscriptions.update(
                subscription_id,
                params={
                    "items": [{"id": item_id, "price": price_id}],
                    "proration_behavior": "create_prorations",
                },
                options={"idempotency_key": idempotency_key},
            ),
        )

    def price_for_lookup_key(self, lookup_key: str) -> str | None:
        """The active price holding ``lookup_key`` (``meterbridge stripe sync-catalog``)."""
        page = self._call(
            "find the plan's price",
            lambda: self._client.v1.prices.list(
                params={"lookup_keys": [lookup_key], "active": True, "limit": 1}
            ),
        )
        return str(page.data[0].id) if page.data else None

    def cancel_subscription(self, *, subscription_id: str, idempotency_key: str) -> None:
        try:
            # At once, no proration credit and no invoice from Stripe: a paid period's base
            # price is not refunded, and the last period's overage goes on meterbridge's own
            # final invoice (docs/billing.md#offboarding), so nothing is charged twice.
            self._client.v1.subscriptions.cancel(
                subscription_id,
                params={"invoice_now": False, "prorate": False},
                options={"idempotency_key": idempotency_key},
            )
            return
        except self._stripe.StripeError:
            # Stripe refuses to cancel twice, so an offboarding retry must look before failing.
            pass
        current = self._call(
            "read the subscription",
            lambda: self._client.v1.subscriptions.retrieve(subscription_id),
        )
        if current.status != "canceled":
            raise UpstreamUnavailable(
                "Stripe failed to cancel the subscription; retry the request",
                headers={"Retry-After": "2"},
            )


_lock = threading.Lock()
_gateway: tuple[tuple[str, str], BillingGateway] | None = None


def get_gateway(settings: Settings) -> BillingGateway | None:
    """The billing gateway, or None when ``STRIPE_API_KEY`` is empty (Stripe is skipped)."""
    global _gateway
    if not settings.stripe_api_key:
        return None
    ident = (settings.stripe_api_key, settings.stripe_api_base)
    with _lock:
        if _gateway is None or _gateway[0] != ident:
            _gateway = (ident, StripeBilling(settings.stripe_api_key, settings.stripe_api_base))
        return _gateway[1]
