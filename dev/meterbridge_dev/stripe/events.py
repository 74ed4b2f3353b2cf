"""Listing Stripe events for reconciliation, through the real ``stripe`` client.

``GET /v1/events`` with ``created[gte]``, paginated by the client's auto-pager. Stripe keeps
events for 30 days, so that is the furthest reconcile can reach. ``STRIPE_API_BASE`` points
the client at another server (the loopback fake in tests) without a code change.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from meterbridge.adapters import stripe_client
from meterbridge.errors import UpstreamUnavailable
from meterbridge.observability import logger
from meterbridge.runtime.lazy import LazyLoader

if TYPE_CHECKING:  # pragma: no cover
    import stripe
else:
    stripe = LazyLoader("stripe", globals(), "stripe")

PAGE_SIZE = 100


class StripeEvents:
    """The events list of one Stripe account."""

    def __init__(self, api_key: str, api_base: str = "") -> None:
        self._stripe = stripe
        # Listing is read-only: retrying a failed page is always safe.
        self._client = stripe_client.client(api_key, api_base, retries=2)

    def since(self, created_gte: int) -> Iterator[dict[str, Any]]:
        """Every event created at or after ``created_gte`` (epoch s), newest first, as dicts."""
        try:
            page = self._client.v1.events.list(
                params={"created": {"gte": created_gte}, "limit": PAGE_SIZE}
            )
            for event in page.auto_paging_iter():
                # The plain JSON form, as a webhook body would carry it.
                yield event.to_dict()
        except self._stripe.StripeError as exc:
            logger.warning(
                "stripe events list failed",
                extra={
                    "http_status": getattr(exc, "http_status", None),
                    "error": type(exc).__name__,
                },
            )
            raise UpstreamUnavailable("Stripe failed to list events; run reconcile again") from exc
