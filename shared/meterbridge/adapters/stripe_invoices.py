"""Invoices and invoice items, through the real ``stripe`` client.

No retries in the client (``max_network_retries=0``): a failed call fails the webhook with a
5xx and Stripe's redelivery retries the whole step under the same idempotency key. Stripe
errors become ``UpstreamUnavailable`` (502); their messages never carry the API key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from meterbridge.adapters import stripe_client
from meterbridge.errors import UpstreamUnavailable
from meterbridge.runtime.lazy import LazyLoader
from meterbridge.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    import stripe
else:
    stripe = LazyLoader("stripe", globals(), "stripe")

T = TypeVar("T")
PAGE_SIZE = 100


class StripeInvoices:
    def __init__(self, api_key: str, api_base: str = "") -> None:
        self._stripe = stripe
        self._client = stripe_client.client(api_key, api_base)

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        return stripe_client.call(what, fn)

    def invoice(self, invoice_id: str) -> dict[str, Any]:
        found = self._call(
            "read the invoice", lambda: self._client.v1.invoices.retrieve(invoice_id)
        )
        return found.to_dict()

    def invoice_items(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """Invoice items by ``invoice=``, ``customer=`` or ``pending=``, every page."""

        def first() -> Any:
            return self._client.v1.invoice_items.list(params={"limit": PAGE_SIZE, **filters})  # type: ignore[arg-type]

        page = self._call("list invoice items", first)
        try:
            for item in page.auto_paging_iter():
                yield item.to_dict()
        except self._stripe.StripeError as exc:
            raise UpstreamUnavailable("Stripe failed to list invoice items; retry later") from exc

    def create_invoice_item(self, params: dict[str, Any], idempotency_key: str) -> str:
        item = self._call(
            "add the invoice item",
            lambda: self._client.v1.invoice_items.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": idempotency_key},
            ),
        )
        return str(item.id)

    # the final invoice of an offboarded tenant (docs/billing.md#offboarding)

    def invoices(self, customer: str) -> Iterator[dict[str, Any]]:
        """Every invoice of ``customer``, newest first, every page."""
        page = self._call(
            "list invoices",
            lambda: self._client.v1.invoices.list(
                params={"customer": customer, "limit": PAGE_SIZE}
            ),
        )
        try:
            for invoice in page.auto_paging_iter():
                yield invoice.to_dict()
        except self._stripe.StripeError as exc:
            raise UpstreamUnavailable("Stripe failed to list invoices; retry later") from exc

    def create_invoice(self, params: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        invoice = self._call(
            "create the invoice",
            lambda: self._client.v1.invoices.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": idempotency_key},
            ),
        )
        return invoice.to_dict()

    def finalize_invoice(self, invoice_id: str, idempotency_key: str) -> dict[str, Any]:
        invoice = self._call(
            "finalize the invoice",
            lambda: self._client.v1.invoices.finalize_invoice(
                invoice_id,
                params={"auto_advance": True},
                options={"idempotency_key": idempotency_key},
            ),
        )
        return invoice.to_dict()


_clients: dict[tuple[str, str], StripeInvoices] = {}


def get_invoices(settings: Settings) -> StripeInvoices | None:
    """The client, or None when ``STRIPE_API_KEY`` is empty (billing is skipped)."""
    if not settings.stripe_api_key:
        return None
    ident = (settings.stripe_api_key, settings.stripe_api_base)
    if ident not in _clients:
        _clients.clear()
        _clients[ident] = StripeInvoices(*ident)
    return _clients[ident]
