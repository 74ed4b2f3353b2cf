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

from meterbridge.errors import UpstreamUnavailable
from meterbridge.observability import logger
from meterbridge.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    import stripe

T = TypeVar("T")
STRIPE_TIMEOUT_S = 10.0
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


def stripe_client(api_key: str, api_base: str = "") -> stripe.StripeClient:
    """A ``stripe.StripeClient`` that never retries on its own (``STRIPE_API_BASE``: a fake)."""
    import stripe

    return stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base} if api_base else None,
        max_network_retries=0,
        http_client=stripe.HTTPXClient(timeout=STRIPE_TIMEOUT_S, allow_sync_methods=True),
    )


def plan_price(gateway: BillingGateway, plan_id: str) -> str | None:
    """The Stripe price a plan subscribes to: the one holding lookup key ``meterbridge_<plan
    id>`` (docs/billing.md#prices-in-stripe), else ``plans.json``'s ``stripe_price_id`` for a
    Stripe account the catalogue was not synced to. None: the plan has no price (free, custom)."""
    from meterbridge.plans import catalog

    plan = catalog().plan(plan_id)
    if not plan.base_price_cents:
        return None
    return gateway.price_for_lookup_key(f"meterbridge_{plan_id}") or plan.stripe_price_id


class StripeBilling:
    """``BillingGateway`` on the real ``stripe`` client (``STRIPE_API_BASE``: e.g. a fake)."""

    def __init__(self, api_key: str, api_base: str = "") -> None:
        import stripe

        self._stripe = stripe
        self._client = stripe_client(api_key, api_base)

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except self._stripe.StripeError as exc:
            status = getattr(exc, "http_status", None)
            code = getattr(exc, "code", None)
            logger.warning(
                "stripe call failed",
                extra={
                    "stripe_call": what,
                    "http_status": status,
                    "stripe_code": code,
                    "error": type(exc).__name__,
                },
            )
            raise UpstreamUnavailable(
                f"Stripe failed to {what}; retry the request with the same Idempotency-Key",
                details={"stripe_status": status, "stripe_code": code},
                headers={"Retry-After": "2"},
            ) from exc

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
            self._client.v1.subscriptions.cancel(
                subscription_id, options={"idempotency_key": idempotency_key}
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
