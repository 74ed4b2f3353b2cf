"""Stripe webhook handling: verify, then apply or bill (docs/stripe-webhooks.md).

``handle`` is what ``functions/stripe_webhook`` and the dev stack's ``/stripe/webhook`` call: it
verifies the signature on the raw bytes (``verify``), acknowledges what is not a billing event,
sends ``invoice.created`` to the overage billing (``logic.billing.invoice``) and every translated
event through the exactly-once path (``apply.process``), and counts the outcome.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from meterbridge.dal import webhooks
from meterbridge.errors import InvalidSignature
from meterbridge.logic.billing.invoice import on_invoice_created
from meterbridge.logic.stripe.apply import api_versions, process
from meterbridge.logic.stripe.translate import unhandled
from meterbridge.logic.stripe.verify import header, load_body, parse_event, verify
from meterbridge.models.stripe import Outcome, StripeEvent, WebhookResult
from meterbridge.observability import logger, metrics
from meterbridge.settings import Settings, get_settings

# Not translations (no tenant state changes): the invoice gets its overage lines.
BILLING_TYPES = frozenset({"invoice.created"})


def bill_invoice(event: StripeEvent, settings: Settings) -> WebhookResult:
    """``invoice.created``: add the period's overage items, exactly once; a Stripe failure
    raises ``UpstreamUnavailable`` (502) so Stripe delivers the event again."""

    billed = on_invoice_created(event.data.object, settings)
    outcome: Outcome = "applied" if billed.outcome == "applied" else "ignored"
    if billed.outcome == "unmatched":
        outcome = "unmatched"
    return WebhookResult(
        outcome=outcome,
        event_id=event.id,
        event_type=event.type,
        tenant_id=billed.tenant_id,
        billing_type="invoice.overage" if billed.outcome == "applied" else None,
        **api_versions(event),
    )


# -- the HTTP surface ----------------------------------------------------------------------


def handle(raw_body: bytes, headers: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
    """Process one webhook delivery; returns the HTTP status and JSON body for Stripe.

    Raises ``InvalidSignature`` (400) before anything is written when the signature fails.
    """

    settings = get_settings()
    secrets = webhooks.webhook_secrets(
        settings.stripe_webhook_secret, settings.stripe_webhook_secret_parameter
    )
    try:
        verify(raw_body, header(headers, "Stripe-Signature"), secrets)
    except InvalidSignature as exc:
        metrics.add_metric(name="StripeWebhookRejected", unit=MetricUnit.Count, value=1)
        logger.warning("stripe webhook rejected", extra={"reason": exc.message})
        raise
    payload = load_body(raw_body)
    reason = unhandled(payload)
    if payload.get("object") == "event" and payload.get("type") in BILLING_TYPES:
        reason = None
        result = bill_invoice(parse_event(payload), settings)
    elif reason is None:
        result = process(parse_event(payload), settings)
    else:
        result = WebhookResult(
            outcome="ignored",
            event_id=str(payload.get("id") or "")[:255],
            event_type=str(payload.get("type") or "")[:255],
            api_version=payload.get("api_version")
            if isinstance(payload.get("api_version"), str)
            else None,
        )
    metric = {
        "applied": "StripeWebhookApplied",
        "duplicate": "StripeWebhookDuplicate",
        "ignored": "StripeWebhookIgnored",
        "unmatched": "StripeWebhookUnmatched",
        "in_flight": "StripeWebhookInFlight",
    }[result.outcome]
    metrics.add_metric(name=metric, unit=MetricUnit.Count, value=1)
    logger.info(
        "stripe event ignored" if result.outcome == "ignored" else "stripe event handled",
        extra={
            "stripe_event_id": result.event_id,
            "stripe_type": result.event_type,
            "stripe_api_version": result.api_version,
            "outcome": result.outcome,
            "reason": reason or ("not translated" if result.outcome == "ignored" else None),
        },
    )
    return result.http()
