"""A verified Stripe event applied exactly once: dedupe, enqueue, tenant state (issue 6).

The path is DynamoDB only (no Stripe API call); the webhook (``webhook.handle``) and the dev
kit's reconcile call ``process``. One of two paths, both ending with a best-effort NATS publish:

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

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from meterbridge.bus.publisher import Message, get_publisher
from meterbridge.bus.subjects import nats_msg_id, tenant_subject
from meterbridge.dal import outbox, tenant_state, webhooks
from meterbridge.logic import auth
from meterbridge.logic.stripe.resolve import resolve_profile
from meterbridge.logic.stripe.translate import pinned_api_version, translate
from meterbridge.models.cloudevent import CloudEvent, now_rfc3339
from meterbridge.models.stripe import BillingChange, StripeEvent, WebhookResult
from meterbridge.observability import logger, metrics
from meterbridge.settings import Settings, get_settings

FAILED_PAYMENTS_TO_SUSPEND = 3
# Actions whose whole effect is one outbox put and one guarded write (see the module docstring).
SINGLE_WRITE_ACTIONS = frozenset({"subscription", "checkout"})
# A concurrent duplicate waits this long for the in-flight delivery, then gets a 409 (retried).
IN_FLIGHT_WAIT_S = 2.5
_POLL_S = 0.05


def process(
    event: StripeEvent, settings: Settings | None = None, *, wait_s: float = IN_FLIGHT_WAIT_S
) -> WebhookResult:
    """Apply one verified Stripe event exactly once; safe to call again with the same event."""
    settings = settings or get_settings()
    versions = api_versions(event)
    change = translate(event)
    if change is None:
        return WebhookResult(
            outcome="ignored", event_id=event.id, event_type=event.type, **versions
        )
    if change.action in SINGLE_WRITE_ACTIONS:
        return _process_single_write(change, event, settings).model_copy(update=versions)
    return _process_claimed(change, event, settings, wait_s).model_copy(update=versions)


def api_versions(event: StripeEvent) -> dict[str, str | None]:
    """The event's API version, and the pinned one when they differ (logged and counted:
    fields of another version may be missing, e.g. an invoice's subscription or price)."""

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
