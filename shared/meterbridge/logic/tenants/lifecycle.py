"""The tenant lifecycle after provisioning: change plan (or name, email), suspend, resume,
offboard. Every change is a versioned transition of the profile with its CloudEvent in the
outbox (``TenantRepository.transition``); docs/tenants.md describes the state machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from meterbridge.adapters.stripe_billing import get_gateway, plan_price
from meterbridge.dal import tenants as tenants_dal
from meterbridge.errors import Conflict, TenantChanged
from meterbridge.logic.auth import forget
from meterbridge.logic.billing import plan_parts
from meterbridge.logic.billing.final import bill_final_period
from meterbridge.logic.keys import lifecycle as keys
from meterbridge.logic.tenants.events import lifecycle_event, publish
from meterbridge.logic.tenants.queries import get_tenant
from meterbridge.models.cloudevent import CloudEvent
from meterbridge.models.tenant import Tenant, TenantUpdate
from meterbridge.observability import logger
from meterbridge.settings import Settings, get_settings
from meterbridge.timestamps import rfc3339

# The Stripe gateway, the plan catalogue and the billing steps are imported inside the
# transitions that use them (plan change, offboard): suspend and resume never need them
# (docs/performance/cold_start.md).

# Usage and events of an offboarded tenant are kept this long (docs/tenants.md).
RETENTION_DAYS = 400
OFFBOARD_ATTEMPTS = 3

Change = tuple[Tenant, list[CloudEvent]]


def _transition(
    tenant: Tenant,
    settings: Settings,
    *,
    sets: dict[str, Any],
    event_type: str | None,
    data: dict[str, Any],
    removes: Sequence[str] = (),
) -> Change:
    """Apply ``sets`` to the profile if nobody changed it since we read it (version check),
    with the event in the outbox in the same transaction."""
    version = tenant.version + 1
    events: list[CloudEvent] = []
    if event_type:
        events.append(lifecycle_event(event_type, tenant.tenant_id, version, data))
    tenants_dal.repository(settings).transition(
        tenant.tenant_id,
        expect=tenant.version,
        to={**sets, "updated_at": rfc3339()},
        removes=removes,
        event=events[0] if events else None,
    )
    forget()  # plan and status follow at once in this process
    return get_tenant(tenant.tenant_id, settings), events


def _live(tenant_id: str, settings: Settings) -> Tenant:
    tenant = get_tenant(tenant_id, settings)
    if tenant.status == "deleted":
        raise Conflict(f"tenant {tenant_id} is offboarded")
    if tenant.status == "provisioning":
        raise Conflict(f"tenant {tenant_id} is still provisioning; retry the create request")
    return tenant


def update_sync(tenant_id: str, change: TenantUpdate, settings: Settings | None = None) -> Change:
    """Change name, email and/or plan. A plan change moves the Stripe subscription first,
    with an idempotency key per profile version, so a retry never double-charges."""
    settings = settings or get_settings()
    tenant = _live(tenant_id, settings)
    sets: dict[str, Any] = {}
    removes: list[str] = []
    if change.name is not None and change.name != tenant.name:
        sets["name"] = change.name
    if change.email is not None and change.email != tenant.email:
        sets["email"] = change.email
    plan_changed = change.plan is not None and change.plan != tenant.plan
    if plan_changed:
        assert change.plan is not None
        sets["plan"] = change.plan
        subscription_id = _move_subscription(tenant, change.plan, settings)
        # Each part of the period is priced with the plan in force (docs/billing.md#plan-changes).
        earlier = tenants_dal.repository(settings).plan_changes(tenant_id)
        record = plan_parts.change_record(tenant_id, tenant.plan, change.plan, settings)
        sets["plan_changes"] = plan_parts.with_change(earlier, record)
        if subscription_id is None and tenant.stripe_subscription_id:
            removes.append("stripe_subscription_id")
        elif subscription_id is not None:
            sets["stripe_subscription_id"] = subscription_id
    if not sets:
        return tenant, []
    updated, events = _transition(
        tenant,
        settings,
        sets=sets,
        removes=removes,
        event_type="tenant.plan_changed" if plan_changed else None,
        data={"from_plan": tenant.plan, "to_plan": change.plan},
    )
    if plan_changed:
        logger.info(
            "tenant plan changed",
            extra={"tenant_id": tenant_id, "from_plan": tenant.plan, "to_plan": change.plan},
        )
    return updated, events


def _move_subscription(tenant: Tenant, plan_id: str, settings: Settings) -> str | None:
    """The subscription id after moving to ``plan_id`` (None: no subscription)."""
    gateway = get_gateway(settings)
    current = tenant.stripe_subscription_id
    if gateway is None or not tenant.stripe_customer_id:
        return current
    price = plan_price(gateway, plan_id)
    step = f"{tenant.tenant_id}-v{tenant.version + 1}"
    if current and price:
        gateway.change_price(
            subscription_id=current, price_id=price, idempotency_key=f"mb-plan-{step}"
        )
        return current
    if current and not price:
        # Free and custom-contract plans have no Stripe price: end the paid subscription.
        gateway.cancel_subscription(subscription_id=current, idempotency_key=f"mb-cancel-{step}")
        return None
    if price:
        return gateway.create_subscription(
            tenant_id=tenant.tenant_id,
            customer_id=tenant.stripe_customer_id,
            price_id=price,
            idempotency_key=f"mb-subscription-{step}",
        )
    return None


def suspend_sync(tenant_id: str, settings: Settings | None = None) -> Change:
    """Suspend (403 on every usage call from now on); suspending twice changes nothing."""
    settings = settings or get_settings()
    tenant = _live(tenant_id, settings)
    if tenant.status == "suspended":
        return tenant, []
    logger.info("tenant suspended", extra={"tenant_id": tenant_id})
    return _transition(
        tenant, settings, sets={"status": "suspended"}, event_type="tenant.suspended", data={}
    )


def resume_sync(tenant_id: str, settings: Settings | None = None) -> Change:
    settings = settings or get_settings()
    tenant = _live(tenant_id, settings)
    if tenant.status == "active":
        return tenant, []
    logger.info("tenant resumed", extra={"tenant_id": tenant_id})
    return _transition(
        tenant, settings, sets={"status": "active"}, event_type="tenant.resumed", data={}
    )


def offboard_sync(tenant_id: str, settings: Settings | None = None) -> Change:
    """Revoke every key, cancel the subscription, mark deleted. Each step is idempotent, so a
    retry after a Stripe failure finishes the job; an offboarded tenant answers as it is."""
    settings = settings or get_settings()
    tenant = get_tenant(tenant_id, settings)
    if tenant.status == "deleted":
        return tenant, []
    revoked = keys.revoke_all(tenant_id, settings)
    gateway = get_gateway(settings)
    final_invoice = None
    if gateway is not None and tenant.stripe_customer_id:
        # Bill the last, partial period before the subscription ends (the webhook would move
        # an ended subscription's tenant to free, and price nothing): docs/billing.md#offboarding.
        profile = tenants_dal.repository(settings).mark_offboarding(tenant_id, at=rfc3339())
        final_invoice = bill_final_period(profile, settings)
    if gateway is not None and tenant.stripe_subscription_id:
        gateway.cancel_subscription(
            subscription_id=tenant.stripe_subscription_id,
            idempotency_key=f"mb-cancel-{tenant_id}-offboard",
        )
    deleted_at = datetime.now(UTC)
    retain_until = deleted_at + timedelta(days=RETENTION_DAYS)
    sets = {
        "status": "deleted",
        "deleted_at": rfc3339(deleted_at),
        "retain_until": retain_until.date().isoformat(),
        "subscription_cancelled": bool(tenant.stripe_subscription_id),
    }
    if final_invoice:
        sets["final_invoice_id"] = final_invoice
    # The cancellation's own webhook (customer.subscription.deleted) may update the profile
    # meanwhile: read it again and retry, the Stripe steps above are done and idempotent.
    for attempt in range(OFFBOARD_ATTEMPTS):
        try:
            done = _transition(
                tenant,
                settings,
                sets=sets,
                event_type="tenant.offboarded",
                data={"keys_revoked": revoked, "retention_days": RETENTION_DAYS},
            )
            break
        except TenantChanged:
            tenant = get_tenant(tenant_id, settings)
            if tenant.status == "deleted":
                return tenant, []
            if attempt == OFFBOARD_ATTEMPTS - 1:
                raise
    logger.info("tenant offboarded", extra={"tenant_id": tenant_id, "keys_revoked": revoked})
    return done


async def _run(fn: Callable[..., Change], *args: Any) -> Tenant:
    tenant, events = await asyncio.to_thread(fn, *args)
    await publish(events)
    return tenant


async def update(tenant_id: str, change: TenantUpdate) -> Tenant:
    return await _run(update_sync, tenant_id, change)


async def suspend(tenant_id: str) -> Tenant:
    return await _run(suspend_sync, tenant_id)


async def resume(tenant_id: str) -> Tenant:
    return await _run(resume_sync, tenant_id)


async def offboard(tenant_id: str) -> Tenant:
    return await _run(offboard_sync, tenant_id)
