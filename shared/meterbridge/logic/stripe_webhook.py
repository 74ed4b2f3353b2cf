"""Stripe webhook handling: verify, dedupe, translate, apply tenant state (issue 6).

The request path is DynamoDB only (no Stripe API call) and starts by verifying the signature on
the raw bytes. Then one of two paths, both ending with a best-effort NATS publish:

- Single-write events (subscription lifecycle, Checkout): read the tenant profile, then put the
  CloudEvent in the outbox and apply the guarded state write: one transaction for a subscription
  event newer than the stored state, else (or when it is cancelled) the two single writes at
  once, so an older event is still enqueued. Both writes are
  idempotent and conditional on their own (the outbox key is the Stripe event id; the state
  write needs a strictly greater ordering key), so every delivery runs them: a duplicate finds
  both refused and answers ``duplicate`` after proving both durable. No lock, no end marker:
  two sequential round trips. The outbox item is the event id's idempotency record (kept until
  sent, then 45 days).
- Payment events (several dependent steps: count, then suspend): claim the Stripe event id (a
  conditional put with an expiring lock), enqueue, apply the steps, mark the event done.

Every step is idempotent on its own, so a crash anywhere followed by Stripe's redelivery (or
``meterbridge stripe reconcile``) completes the work exactly once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from meterbridge.bus.publisher import Message, get_publisher
from meterbridge.bus.subjects import nats_msg_id, tenant_subject
from meterbridge.dal import outbox, tenant_state, webhooks
from meterbridge.errors import InvalidSignature, MeterbridgeError, ValidationFailed
from meterbridge.logic import auth
from meterbridge.logic.stripe_translate import (
    TRANSLATIONS,
    BillingChange,
    StripeEvent,
    translate,
)
from meterbridge.models.cloudevent import CloudEvent, now_rfc3339
from meterbridge.observability import logger
from meterbridge.settings import Settings, get_settings

SIGNATURE_TOLERANCE_S = 300
# Deeper than any Stripe payload (about a dozen levels): refused before anything else.
MAX_BODY_DEPTH = 64
FUTURE_TOLERANCE_S = 300
FAILED_PAYMENTS_TO_SUSPEND = 3
# Actions whose whole effect is one outbox put and one guarded write (see the module docstring).
SINGLE_WRITE_ACTIONS = frozenset({"subscription", "checkout"})
# A concurrent duplicate waits this long for the in-flight delivery, then gets a 409 (retried).
IN_FLIGHT_WAIT_S = 2.5
_POLL_S = 0.05


class WebhookMisconfigured(MeterbridgeError):
    """No signing secret is configured: a 500 so Stripe keeps retrying until it is fixed."""

    status, code = 500, "webhook_not_configured"


Outcome = Literal["applied", "duplicate", "ignored", "unmatched", "in_flight"]


class WebhookResult(BaseModel):
    outcome: Outcome
    event_id: str
    event_type: str
    tenant_id: str | None = None
    billing_type: str | None = None
    # The CloudEvent enqueued by this call (None when it was already in the outbox).
    cloud_event: CloudEvent | None = None
    # The event's Stripe API version; ``expected_api_version`` only when it is not the pinned one.
    api_version: str | None = None
    expected_api_version: str | None = None

    def http(self) -> tuple[int, dict[str, Any]]:
        if self.outcome == "in_flight":
            # Not durable yet: a non-2xx makes Stripe deliver again later.
            return 409, {
                "error": {
                    "code": "in_progress",
                    "message": "this event is being processed; retry later",
                }
            }
        body: dict[str, Any] = {"received": True, "id": self.event_id, "outcome": self.outcome}
        if self.billing_type:
            body["type"] = self.billing_type
        if self.api_version:
            body["api_version"] = self.api_version
        if self.expected_api_version:
            body["expected_api_version"] = self.expected_api_version
        return 200, body


# -- verification --------------------------------------------------------------------------


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def _signed_timestamp(header: str) -> int:
    """The ``t`` the stripe library verified: the last part whose key is exactly ``t``."""
    stamp: str | None = None
    for part in header.split(","):
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
    import stripe

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


def pinned_api_version() -> str:
    """The Stripe API version the translations read fields for: the pinned stripe-python's."""
    import stripe

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


# -- the idempotent path (webhook and reconcile) --------------------------------------------


def process(
    event: StripeEvent, settings: Settings | None = None, *, wait_s: float = IN_FLIGHT_WAIT_S
) -> WebhookResult:
    """Apply one verified Stripe event exactly once; safe to call again with the same event."""
    settings = settings or get_settings()
    versions = _api_versions(event)
    change = translate(event)
    if change is None:
        return WebhookResult(
            outcome="ignored", event_id=event.id, event_type=event.type, **versions
        )
    if change.action in SINGLE_WRITE_ACTIONS:
        return _process_single_write(change, event, settings).model_copy(update=versions)
    return _process_claimed(change, event, settings, wait_s).model_copy(update=versions)


def _api_versions(event: StripeEvent) -> dict[str, str | None]:
    """The event's API version, and the pinned one when they differ (logged and counted:
    fields of another version may be missing, e.g. an invoice's subscription or price)."""
    from aws_lambda_powertools.metrics import MetricUnit

    from meterbridge.observability import metrics

    pinned = pinned_api_version()
    if event.api_version is None or event.api_version == pinned:
        return {"api_version": event.api_version, "expected_api_version": None}
    logger.warning(
        "stripe event api_version differs from the pinned version",
        extra={
            "stripe_event_id": event.id,
            "stripe_type": event.type,
            "stripe_api_version": event.api_version,
            "expected_api_version": pinned,
        },
    )
    metrics.add_metric(name="StripeApiVersionMismatch", unit=MetricUnit.Count, value=1)
    return {"api_version": event.api_version, "expected_api_version": pinned}


def _process_claimed(
    change: BillingChange, event: StripeEvent, settings: Settings, wait_s: float
) -> WebhookResult:
    """The payment path: claim the event id, apply the dependent steps, mark it done."""
    table = settings.idempotency_table
    deadline = time.monotonic() + wait_s
    # The tenant lookup is a read that does not depend on the claim: overlap the round trips.
    lookup = _pool().submit(resolve_profile, change, settings)
    claim = webhooks.claim(table, event.id, event.type)
    while not claim.claimed:
        if claim.state == "done":
            return WebhookResult(
                outcome="duplicate",
                event_id=event.id,
                event_type=event.type,
                billing_type=change.billing_type,
            )
        if time.monotonic() >= deadline:
            return WebhookResult(outcome="in_flight", event_id=event.id, event_type=event.type)
        # Another delivery holds the lock: wait for it to finish, or for its lock to expire.
        time.sleep(_POLL_S)
        seen = webhooks.peek(table, event.id)
        if seen is not None and seen.state == "done":
            claim = seen
            continue
        if (
            seen is None
            or seen.state == "unmatched"
            or (seen.lock_until is not None and seen.lock_until < time.time())
        ):
            claim = webhooks.claim(table, event.id, event.type)
    assert claim.token is not None
    try:
        profile = lookup.result()
        result = _apply(change, event, profile, settings)
        if result.outcome == "duplicate":
            # Our claim is what makes this delivery the one that applies: report it as applied
            # even when a crashed earlier attempt already made every write.
            result = result.model_copy(update={"outcome": "applied"})
        webhooks.finish(
            table,
            event.id,
            event.type,
            "unmatched" if result.outcome == "unmatched" else "done",
            tenant_id=result.tenant_id,
            api_version=event.api_version,
        )
    except BaseException:
        webhooks.release(table, event.id, claim.token)
        raise
    if result.outcome == "applied" and result.tenant_id and result.cloud_event is not None:
        # After the 2xx-worthy state is durable; NATS is best effort (the flush republishes).
        _publish(result.cloud_event, result.tenant_id, settings)
    return result


def _process_single_write(
    change: BillingChange, event: StripeEvent, settings: Settings
) -> WebhookResult:
    """Two round trips: the profile read, then the outbox put and the guarded write at once.

    A 2xx is only returned once both writes are durable, by this delivery or an earlier one:
    ``put_new`` refused means the outbox item exists; the guarded write refused (or skipped
    because the profile read already holds an equal or greater key) means that state or a newer
    one is stored. Concurrent deliveries each run the same two conditional writes; exactly one
    outbox put wins, so the event is enqueued and published once.
    """
    profile = resolve_profile(change, settings)
    result = _apply(change, event, profile, settings)
    if result.outcome == "unmatched":
        # For operators and reconcile: nothing waits on this record (no lock on this path).
        webhooks.finish(
            settings.idempotency_table,
            event.id,
            event.type,
            "unmatched",
            api_version=event.api_version,
        )
    elif result.outcome == "applied" and result.tenant_id and result.cloud_event is not None:
        _publish(result.cloud_event, result.tenant_id, settings)
    return result


_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """One pool per process, created on first use: overlapping independent DynamoDB calls."""
    global _executor
    if _executor is None:
        with _executor_lock:
            if _executor is None:
                _executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="stripe-webhook")
    return _executor


def resolve_profile(change: BillingChange, settings: Settings) -> dict[str, Any] | None:
    """The profile of the tenant a Stripe object belongs to, or None (docs/stripe-webhooks.md).

    The stored customer link wins: an event naming a customer linked to a tenant is that
    tenant's, whatever ``metadata.tenant_id`` says. The metadata (ours, set at provisioning and
    Checkout) names the tenant only when the stored link agrees, or when neither side is linked
    yet (a Checkout linking a new customer). A tenant linked to a customer never takes an event
    that names no customer or another one.
    """
    table = settings.tenants_table
    hinted = tenant_state.get_profile(table, change.tenant_hint) if change.tenant_hint else None
    linked = (hinted or {}).get("stripe_customer_id")
    if hinted and change.customer_id and linked == change.customer_id:
        return hinted  # both sides agree: one consistent read
    owner = tenant_state.find_by_customer(table, change.customer_id) if change.customer_id else None
    if owner is not None:
        if change.tenant_hint and change.tenant_hint != owner.get("tenant_id"):
            _refused_hint(change, "the customer is linked to another tenant")
        return owner
    if hinted is None:
        return None
    if linked:
        _refused_hint(change, "the tenant is linked to another customer")
        return None
    return hinted


def _refused_hint(change: BillingChange, reason: str) -> None:
    logger.warning(
        "stripe metadata tenant_id refused",
        extra={
            "stripe_event_id": change.stripe_event_id,
            "stripe_type": change.stripe_type,
            "tenant_hint": change.tenant_hint,
            "reason": reason,
        },
    )


def _apply(
    change: BillingChange,
    event: StripeEvent,
    profile: dict[str, Any] | None,
    settings: Settings,
) -> WebhookResult:
    """Enqueue and apply at once; ``duplicate`` when both were already durable."""
    if profile is None:
        logger.warning(
            "stripe event for an unknown customer",
            extra={"stripe_event_id": event.id, "stripe_type": event.type},
        )
        return WebhookResult(
            outcome="unmatched",
            event_id=event.id,
            event_type=event.type,
            billing_type=change.billing_type,
        )
    tenant_id = str(profile["tenant_id"])
    cloud_event = change.cloud_event(tenant_id)
    enqueued = changed = False
    if change.action == "subscription" and not _state_is_stale(change, profile):
        # The common case (a new event, newer than the stored state): both writes in one
        # transaction, one request. Cancelled (a duplicate, a race): the single writes below.
        enqueued = changed = webhooks.enqueue_with_update(
            settings.events_table,
            outbox.outbox_item(cloud_event, tenant_id=tenant_id, kind="billing"),
            tenant_state.subscription_update(
                settings.tenants_table, tenant_id, **_subscription_fields(change)
            ),
        )
    if not enqueued:
        # Independent idempotent writes (outbox put_new, guarded state): overlap the round trips.
        enqueue = _pool().submit(
            outbox.enqueue, settings.events_table, cloud_event, tenant_id=tenant_id, kind="billing"
        )
        changed = apply_state(change, tenant_id, settings, profile=profile)
        enqueued = enqueue.result()
    if changed:
        auth.forget()
    if not (enqueued or changed):
        return WebhookResult(
            outcome="duplicate",
            event_id=event.id,
            event_type=event.type,
            tenant_id=tenant_id,
            billing_type=change.billing_type,
        )
    logger.info(
        "stripe event applied",
        extra={
            "stripe_event_id": event.id,
            "stripe_type": event.type,
            "tenant_id": tenant_id,
            "billing_type": change.billing_type,
        },
    )
    return WebhookResult(
        outcome="applied",
        event_id=event.id,
        event_type=event.type,
        tenant_id=tenant_id,
        billing_type=change.billing_type,
        cloud_event=cloud_event if enqueued else None,
    )


def _state_is_stale(change: BillingChange, profile: dict[str, Any] | None) -> bool:
    """True when ``profile`` already holds this subscription state or a newer one: the stored
    key only grows, so the guarded write would be refused (an older event, a duplicate)."""
    stored = tenant_state.stored_state_key(profile)
    return stored is not None and stored >= tenant_state.state_key(change.created, change.rank)


def _subscription_fields(change: BillingChange) -> dict[str, Any]:
    return {
        "at": change.created,
        "rank": change.rank,
        "event_id": change.stripe_event_id,
        "subscription_id": change.subscription_id,
        "status": change.subscription_status,
        "price_id": change.price_id,
        "plan": change.plan,
        "ends_subscription": change.ends_subscription,
    }


def apply_state(
    change: BillingChange,
    tenant_id: str,
    settings: Settings,
    *,
    profile: dict[str, Any] | None = None,
) -> bool:
    """Apply the tenant state change; True if anything changed (cached principals are stale).

    ``profile``, when given, is a read of the tenant made before this call: a write it proves
    would be refused is skipped (one round trip less for duplicates and older events).
    """
    table = settings.tenants_table
    if change.action == "checkout":
        if profile and (
            profile.get("stripe_customer_id") == change.customer_id
            and profile.get("stripe_checkout_session")
            == (change.checkout_session_id or change.stripe_event_id)
        ):
            return False
        return (
            tenant_state.record_checkout(
                table,
                tenant_id,
                customer_id=change.customer_id,
                session_id=change.checkout_session_id or change.stripe_event_id,
            )
            is not None
        )
    if change.action == "subscription":
        if _state_is_stale(change, profile):
            return False
        return tenant_state.apply_subscription(table, tenant_id, **_subscription_fields(change))
    if change.action == "payment_failed":
        # Independent of the count (a max of failure times): overlap the round trips.
        noted = _pool().submit(tenant_state.note_last_failure, table, tenant_id, at=change.created)
        counted, after = tenant_state.count_failed_payment(
            table, tenant_id, at=change.created, event_id=change.stripe_event_id, note_last=False
        )
        noted.result()
        # Checked even when not counted now (a crash may have come between the two steps), from
        # the profile read after the count: the write is skipped when it could not apply.
        suspended = tenant_state.may_suspend_for_payments(
            after, threshold=FAILED_PAYMENTS_TO_SUSPEND
        ) and tenant_state.suspend_for_payments(
            table, tenant_id, threshold=FAILED_PAYMENTS_TO_SUSPEND
        )
        if suspended:
            logger.warning(
                "tenant suspended after failed payments",
                extra={"tenant_id": tenant_id, "stripe_event_id": change.stripe_event_id},
            )
        return counted or suspended
    reset = tenant_state.record_payment(
        table, tenant_id, at=change.created, invoice_id=change.invoice_id
    )
    resumed = tenant_state.resume_after_payment(
        table, tenant_id, threshold=FAILED_PAYMENTS_TO_SUSPEND
    )
    return reset or resumed


def _publish(cloud_event: CloudEvent, tenant_id: str, settings: Settings) -> None:
    """Best effort: what NATS does not acknowledge is marked for the flush's republish."""
    msg_id = nats_msg_id(cloud_event.source, cloud_event.id)
    message = Message(
        subject=tenant_subject(tenant_id, "billing"), msg_id=msg_id, payload=cloud_event.wire()
    )
    publisher = get_publisher()
    if publisher.enabled and msg_id not in publisher.publish_sync([message]):
        outbox.mark_pending(
            settings.events_table,
            [outbox.event_pk(cloud_event.source, cloud_event.id)],
            accepted_at=now_rfc3339(),
        )


# -- overage on the cycle invoice (docs/billing.md) ------------------------------------------

# Not translations (no tenant state changes): the invoice gets its overage lines.
BILLING_TYPES = frozenset({"invoice.created"})


def bill_invoice(event: StripeEvent, settings: Settings) -> WebhookResult:
    """``invoice.created``: add the period's overage items, exactly once; a Stripe failure
    raises ``UpstreamUnavailable`` (502) so Stripe delivers the event again."""
    from meterbridge.logic.billing.invoice import on_invoice_created

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
        **_api_versions(event),
    )


# -- the HTTP surface ----------------------------------------------------------------------


def handle(raw_body: bytes, headers: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
    """Process one webhook delivery; returns the HTTP status and JSON body for Stripe.

    Raises ``InvalidSignature`` (400) before anything is written when the signature fails.
    """
    from aws_lambda_powertools.metrics import MetricUnit

    from meterbridge.observability import metrics

    settings = get_settings()
    secrets = webhooks.webhook_secrets(
        settings.stripe_webhook_secret, settings.stripe_webhook_secret_parameter
    )
    try:
        verify(raw_body, _header(headers, "Stripe-Signature"), secrets)
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
