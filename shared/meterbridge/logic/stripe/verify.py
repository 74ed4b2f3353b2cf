"""The untrusted bytes of a delivery: the signature, then the body (docs/stripe-webhooks.md).

``verify`` runs on the raw bytes before anything is parsed or written; ``load_body`` and
``parse_event`` turn a verified body into a ``StripeEvent``, refusing what is not one with a 400.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from meterbridge.errors import InvalidSignature, MeterbridgeError, ValidationFailed
from meterbridge.models.stripe import StripeEvent
from meterbridge.runtime.lazy import LazyLoader

if TYPE_CHECKING:
    import stripe
else:
    stripe = LazyLoader("stripe", globals(), "stripe")

SIGNATURE_TOLERANCE_S = 300
# Deeper than any Stripe payload (about a dozen levels): refused before anything else.
MAX_BODY_DEPTH = 64
FUTURE_TOLERANCE_S = 300


class WebhookMisconfigured(MeterbridgeError):
    """No signing secret is configured: a 500 so Stripe keeps retrying until it is fixed."""

    status, code = 500, "webhook_not_configured"


def header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of the header ``name``, matched case-insensitively."""
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def _signed_timestamp(signature: str) -> int:
    """The ``t`` the stripe library verified: the last part whose key is exactly ``t``."""
    stamp: str | None = None
    for part in signature.split(","):
        key, _, value = part.partition("=")
        if key == "t":
            stamp = value
    try:
        return int(stamp or "")
    except ValueError:
        raise InvalidSignature("the Stripe-Signature timestamp is malformed") from None


def verify(
    raw_body: bytes, signature: str | None, secrets: list[str], *, now: float | None = None
) -> None:
    """Raise ``InvalidSignature`` unless one of ``secrets`` signed ``raw_body`` recently.

    The stripe library checks the HMAC and staleness (300 s); it accepts any future timestamp,
    so a signature dated more than 300 s ahead is refused here.
    """

    if not secrets:
        raise WebhookMisconfigured("no Stripe webhook signing secret is configured")
    if not signature:
        raise InvalidSignature("the Stripe-Signature header is missing")
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(
                raw_body, signature, secret, tolerance=SIGNATURE_TOLERANCE_S
            )
        except (stripe.SignatureVerificationError, UnicodeDecodeError, TypeError, ValueError):
            # TypeError/ValueError: a header the library cannot even compare (non-ASCII).
            continue
        now = time.time() if now is None else now
        if _signed_timestamp(signature) > now + FUTURE_TOLERANCE_S:
            raise InvalidSignature("the signature timestamp is in the future")
        return
    raise InvalidSignature("the Stripe-Signature does not match the payload")


def load_body(raw_body: bytes | str) -> dict[str, Any]:
    """The verified body as a JSON object, nested at most ``MAX_BODY_DEPTH`` levels.

    A too-deep body (validly signed or not) is a 400, never a RecursionError: the walk is
    iterative and Python's parser stops at its own limit with an error caught here.
    """
    too_deep = ValidationFailed(
        f"the body is nested more than {MAX_BODY_DEPTH} levels deep",
        details={"max_depth": MAX_BODY_DEPTH},
    )
    try:
        payload = json.loads(raw_body)
    except RecursionError:
        raise too_deep from None
    except ValueError as exc:  # UnicodeDecodeError included
        raise ValidationFailed("the body is not JSON") from exc
    if not isinstance(payload, dict):
        raise ValidationFailed("the body is not a Stripe event")
    stack: list[tuple[Any, int]] = [(payload, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_BODY_DEPTH:
            raise too_deep
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, dict | list))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, dict | list))
    return payload


def parse_event(raw_body: bytes | str | Mapping[str, Any]) -> StripeEvent:
    """A Stripe event envelope from the verified body (or a dict listed by the API)."""
    payload = raw_body if isinstance(raw_body, Mapping) else load_body(raw_body)
    try:
        return StripeEvent.model_validate(payload)
    except ValidationError as exc:
        raise ValidationFailed("the body is not a Stripe event") from exc
