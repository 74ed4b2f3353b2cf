"""The one way meterbridge talks to Stripe: the real ``stripe`` client and its error mapping.

``client`` builds a ``stripe.StripeClient`` (``STRIPE_API_BASE``: another server, e.g. the local
stand-in) with a fixed timeout; writers pass ``retries=0`` so a failed step fails fast and the
caller (Stripe's redelivery, the operator's retry with the same ``Idempotency-Key``) repeats the
whole step under the same idempotency key. ``call`` turns a ``StripeError`` into
``UpstreamUnavailable`` (502) with a ``Retry-After``; its message never carries the API key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from meterbridge.errors import UpstreamUnavailable
from meterbridge.observability import logger
from meterbridge.runtime.lazy import LazyLoader

if TYPE_CHECKING:  # pragma: no cover
    import stripe
else:
    stripe = LazyLoader("stripe", globals(), "stripe")

STRIPE_TIMEOUT_S = 10.0


def client(api_key: str, api_base: str = "", *, retries: int = 0) -> stripe.StripeClient:
    """A ``stripe.StripeClient`` that retries ``retries`` times on its own (writers: never)."""
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base} if api_base else None,
        max_network_retries=retries,
        http_client=stripe.HTTPXClient(timeout=STRIPE_TIMEOUT_S, allow_sync_methods=True),
    )


def call[T](
    what: str, fn: Callable[[], T], *, advice: str = "retry later", retry_after: int = 5
) -> T:
    """``fn()``; a Stripe failure becomes ``UpstreamUnavailable("Stripe failed to <what>;
    <advice>")`` with the Stripe status and code as details (logged, never the key)."""
    try:
        return fn()
    except stripe.StripeError as exc:
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
            f"Stripe failed to {what}; {advice}",
            details={"stripe_status": status, "stripe_code": code},
            headers={"Retry-After": str(retry_after)},
        ) from exc
