"""Products and prices, through the real ``stripe`` client (``meterbridge stripe sync-catalog``).

The layer's ``StripeInvoices`` client (no retries in the client, Stripe errors become
``UpstreamUnavailable``, ``STRIPE_API_BASE`` for another server) with the catalogue calls that
only this command makes, so they stay out of the layer.
"""

from __future__ import annotations

from typing import Any

from meterbridge.adapters.stripe_invoices import PAGE_SIZE, StripeInvoices
from meterbridge.errors import UpstreamUnavailable


class StripePrices(StripeInvoices):
    """The product and price catalogue of one Stripe account."""

    def prices_by_lookup_key(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        page = self._call(
            "list prices",
            lambda: self._client.v1.prices.list(
                params={"lookup_keys": keys, "limit": PAGE_SIZE}  # type: ignore[typeddict-item]
            ),
        )
        return {str(p.lookup_key): p.to_dict() for p in page.data if p.lookup_key}

    def product(self, product_id: str) -> dict[str, Any] | None:
        try:
            return self._client.v1.products.retrieve(product_id).to_dict()
        except self._stripe.InvalidRequestError:
            return None
        except self._stripe.StripeError as exc:
            raise UpstreamUnavailable("Stripe failed to read the product") from exc

    def create_product(self, params: dict[str, Any], idempotency_key: str) -> str:
        product = self._call(
            "create the product",
            lambda: self._client.v1.products.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": idempotency_key},
            ),
        )
        return str(product.id)

    def update_product(self, product_id: str, params: dict[str, Any]) -> None:
        self._call(
            "update the product",
            lambda: self._client.v1.products.update(product_id, params=params),  # type: ignore[arg-type]
        )

    def create_price(self, params: dict[str, Any], idempotency_key: str) -> str:
        price = self._call(
            "create the price",
            lambda: self._client.v1.prices.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": idempotency_key},
            ),
        )
        return str(price.id)
