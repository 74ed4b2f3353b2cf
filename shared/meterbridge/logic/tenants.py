"""Tenant lifecycle: provision (idempotent, resumable), read, list, change plan, suspend,
resume, offboard. docs/tenants.md describes the state machine.

The sync functions do the work (DynamoDB and Stripe are blocking clients); the async ones are
what routes await: they run the work on a thread and then publish the lifecycle CloudEvent to
NATS on the caller's event loop (best effort: the event is already in the outbox, written in
the same DynamoDB transaction as the state change it announces).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from meterbridge.dal import outbox
from meterbridge.dal import tenants as tenants_dal
from meterbridge.errors import (
    ConditionFailed,
    Conflict,
    IdempotencyMismatch,
    NotFound,
    ValidationFailed,
)
from meterbridge.logic import keys
from meterbridge.logic.auth import forget
from meterbridge.models.cloudevent import ADMIN_SOURCE, CloudEvent, now_rfc3339, stable_id
from meterbridge.models.tenant import (
    IDEMPOTENCY_KEY_RE,
    ApiKey,
    IssuedKey,
    ProvisionResult,
    Tenant,
    TenantCreate,
    TenantPage,
    TenantUpdate,
)
from meterbridge.observability import logger, metrics
from meterbridge.settings import Settings, get_settings
from meterbridge.timestamps import rfc3339

# The Stripe gateway, the plan catalogue and the NATS publisher are imported inside the
# lifecycle functions that use them (provision, plan change, suspend/resume, offboard): the
# admin API's other routes (reads, keys, dead letters) never need them, and importing them
# here would cost every cold start of the admin function (docs/performance/cold_start.md).

# A worker holds a provisioning record this long; a crashed worker's record is taken over after.
LEASE_S = 60
# How long an identical concurrent request waits for the first one before a 409.
WAIT_S = 5.0
POLL_S = 0.1
# Idempotency keys are remembered this long (TTL on the PROVISION item).
PROVISION_TTL_S = 30 * 24 * 3600
# Usage and events of an offboarded tenant are kept this long (docs/tenants.md).
RETENTION_DAYS = 400


class ProvisioningInProgress(Conflict):
    """Another request with the same Idempotency-Key is still provisioning."""

    code = "provisioning_in_progress"


now_iso = rfc3339


def new_tenant_id() -> str:
    return "t_" + uuid.uuid4().hex[:16]


def _tenant(item: dict[str, Any]) -> Tenant:
    return Tenant.model_validate(item)


def _event(event_type: str, tenant_id: str, version: int, data: dict[str, Any]) -> CloudEvent:
    # The id is stable per (type, tenant, version): a re-emission after a crash is the same event.
    return CloudEvent(
        id=stable_id(event_type, tenant_id, str(version)),
        source=ADMIN_SOURCE,
        type=event_type,
        subject=tenant_id,
        data={"tenant_id": tenant_id, **data},
    )


def _outbox_ops(settings: Settings, event: CloudEvent, tenant_id: str) -> list[dict[str, Any]]:
    """The event's record (only if new), for the caller's transaction: its stream INSERT
    queues it for OpenMeter."""
    item = outbox.outbox_item(event, tenant_id=tenant_id, kind="tenant")
    return outbox.put_ops(settings.events_table, [item])


async def publish(events: Sequence[CloudEvent], settings: Settings | None = None) -> None:
    """Send lifecycle events to the tenant's NATS subject; mark the ones NATS missed.

    Never raises: the outbox holds the events and the flush republishes what NATS missed.
    """
    if not events:
        return
    from meterbridge.bus.publisher import Message, get_publisher
    from meterbridge.bus.subjects import tenant_subject

    settings = settings or get_settings()
    publisher = get_publisher()
    if not publisher.enabled:
        return
    messages = [Message(tenant_subject(str(e.subject), "tenant"), e.id, e.wire()) for e in events]
    acked = await publisher.publish(messages)
    missed = [outbox.event_pk(e.source, e.id) for e in events if e.id not in acked]
    if missed:
        try:
            await asyncio.to_thread(
                outbox.mark_pending, settings.events_table, missed, accepted_at=now_rfc3339()
            )
        except Exception as exc:  # noqa: BLE001 - the live stream is best effort
            logger.warning("republish mark failed", extra={"error": type(exc).__name__})


# -- provisioning --------------------------------------------------------------------------


def _request_hash(req: TenantCreate) -> str:
    canonical = json.dumps(req.model_dump(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _check_idempotency_key(value: str | None) -> str:
    if not value:
        raise ValidationFailed("the Idempotency-Key header is required (e.g. a UUID)")
    if not IDEMPOTENCY_KEY_RE.match(value):
        raise ValidationFailed(
            "the Idempotency-Key header must be 8-255 characters of [A-Za-z0-9._:~+/=-]"
        )
    return value


def _claim(
    req: TenantCreate, idem: str, owner: str, settings: Settings
) -> tuple[dict[str, Any], bool]:
    """The provisioning record with this worker's lease, or (completed record, True) to replay.

    The conditional put of the PROVISION item decides who works; identical requests arriving
    meanwhile poll it for up to ``WAIT_S`` and then get a 409 with ``Retry-After``.
    """
    table = settings.tenants_table
    body_hash = _request_hash(req)
    deadline = time.monotonic() + WAIT_S
    while True:
        now = time.time()
        item = {
            "idempotency_key": idem,
            "request_hash": body_hash,
            "tenant_id": new_tenant_id(),
            "state": "in_progress",
            "lease_owner": owner,
            "lease_until": int(now) + LEASE_S,
            "created_at": now_iso(),
            "expires_at": int(now) + PROVISION_TTL_S,
        }
        if tenants_dal.start_provision(table, item):
            return item, False
        existing = tenants_dal.get_provision(table, idem)
        if existing is None:
            continue  # expired between our put and get: claim it again
        if existing.get("request_hash") != body_hash:
            raise IdempotencyMismatch(
                "this Idempotency-Key was used with a different request body",
                details={"tenant_id": existing.get("tenant_id")},
            )
        if existing.get("state") == "completed":
            return existing, True
        if float(existing.get("lease_until", 0)) <= now:
            try:
                taken = tenants_dal.update_provision(
                    table,
                    idem,
                    set_="SET lease_owner = :me, lease_until = :u",
                    condition="#st = :busy AND lease_owner = :old AND lease_until <= :now",
                    names={"#st": "state"},
                    vals={
                        ":me": owner,
                        ":u": int(now) + LEASE_S,
                        ":busy": "in_progress",
                        ":old": existing.get("lease_owner"),
                        ":now": int(now),
                    },
                )
                assert taken is not None
                return taken, False
            except ConditionFailed:
                pass  # another worker took it over or finished; look again
        if time.monotonic() >= deadline:
            raise ProvisioningInProgress(
                "a request with this Idempotency-Key is still provisioning; retry shortly",
                headers={"Retry-After": "2"},
                details={"tenant_id": existing.get("tenant_id")},
            )
        time.sleep(POLL_S)


def _set_expr(fields: dict[str, Any]) -> tuple[str, dict[str, str], dict[str, Any]]:
    """``SET #f0 = :v0, ...`` with every attribute name aliased (no reserved-word surprises)."""
    names = {f"#f{i}": name for i, name in enumerate(fields)}
    vals = {f":v{i}": value for i, value in enumerate(fields.values())}
    return "SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(fields))), names, vals


def _record_step(settings: Settings, idem: str, owner: str, fields: dict[str, Any]) -> None:
    """Record finished steps on the PROVISION item, only while this worker holds the lease."""
    set_, names, vals = _set_expr(fields)
    vals[":me"] = owner
    vals[":busy"] = "in_progress"
    names["#st"] = "state"
    tenants_dal.update_provision(
        settings.tenants_table,
        idem,
        set_=set_,
        condition="lease_owner = :me AND #st = :busy",
        names=names,
        vals=vals,
    )


def _release(settings: Settings, idem: str, owner: str) -> None:
    """Give the lease back after a failed step, so a retry resumes at once."""
    try:
        tenants_dal.update_provision(
            settings.tenants_table,
            idem,
            set_="SET lease_until = :zero",
            condition="lease_owner = :me AND #st = :busy",
            names={"#st": "state"},
            vals={":zero": 0, ":me": owner, ":busy": "in_progress"},
        )
    except Exception as exc:  # noqa: BLE001 - the lease also expires on its own
        logger.warning("provisioning lease not released", extra={"error": type(exc).__name__})


def _stripe_steps(
    rec: dict[str, Any], req: TenantCreate, owner: str, settings: Settings
) -> dict[str, Any]:
    """Customer, then subscription (if the plan has a Stripe price); each recorded when done."""
    from meterbridge.adapters.stripe_billing import get_gateway, plan_price

    tenant_id, idem = rec["tenant_id"], rec["idempotency_key"]
    gateway = get_gateway(settings)
    if gateway is None:
        logger.warning("stripe skipped: STRIPE_API_KEY is empty", extra={"tenant_id": tenant_id})
        return {"stripe": "skipped"}
    table = settings.tenants_table
    customer_id = rec.get("stripe_customer_id")
    if not customer_id:
        customer_id = gateway.create_customer(
            tenant_id=tenant_id,
            name=req.name,
            email=req.email,
            idempotency_key=f"mb-customer-{tenant_id}",
        )
        tenants_dal.put_customer_map(table, customer_id, tenant_id)
        _record_step(settings, idem, owner, {"stripe_customer_id": customer_id})
    result: dict[str, Any] = {"stripe": "ok", "stripe_customer_id": customer_id}
    subscription_id = rec.get("stripe_subscription_id")
    price = None if subscription_id else plan_price(gateway, req.plan)
    if price and not subscription_id:
        subscription_id = gateway.create_subscription(
            tenant_id=tenant_id,
            customer_id=customer_id,
            price_id=price,
            idempotency_key=f"mb-subscription-{tenant_id}",
        )
        _record_step(settings, idem, owner, {"stripe_subscription_id": subscription_id})
    if subscription_id:
        result["stripe_subscription_id"] = subscription_id
    return result


def _complete(
    rec: dict[str, Any], req: TenantCreate, owner: str, stripe: dict[str, Any], settings: Settings
) -> tuple[ProvisionResult, CloudEvent]:
    """The last step, one transaction: first key, tenant active, event in the outbox, record
    completed with the response to replay (without the secret). Either all of it or none."""
    tenant_id, idem = rec["tenant_id"], rec["idempotency_key"]
    table = settings.tenants_table
    raw, record = keys.new_record(tenant_id, settings)
    now = now_iso()
    profile = tenants_dal.get_tenant(table, tenant_id)
    assert profile is not None
    profile.update(stripe, status="active", updated_at=now, version=1)
    tenant = _tenant(profile)
    key_info = keys.to_api_key(record)
    event = _event(
        "tenant.provisioned",
        tenant_id,
        1,
        {
            "name": req.name,
            "plan": req.plan,
            "stripe": tenant.stripe,
            "stripe_customer_id": tenant.stripe_customer_id,
        },
    )
    replay = {"tenant": tenant.model_dump(), "api_key": key_info.model_dump()}
    profile_set, profile_names, profile_vals = _set_expr(
        {**stripe, "status": "active", "updated_at": now, "version": 1}
    )
    profile_names["#s"] = "status"
    profile_vals[":provisioning"] = "provisioning"
    done_set, done_names, done_vals = _set_expr(
        {
            "state": "completed",
            "key_id": record["lookup_id"],
            "completed_at": now,
            "response": json.dumps(replay, separators=(",", ":")),
        }
    )
    done_names["#st"] = "state"
    done_vals.update({":me": owner, ":busy": "in_progress"})
    ops = [
        *tenants_dal.key_put_ops(table, record),
        tenants_dal.update_op(
            table,
            tenants_dal.profile_key(tenant_id),
            set_=profile_set,
            condition="#s = :provisioning",
            names=profile_names,
            vals=profile_vals,
        ),
        tenants_dal.update_op(
            table,
            tenants_dal.provision_key(idem),
            set_=done_set,
            condition="lease_owner = :me AND #st = :busy",
            names=done_names,
            vals=done_vals,
        ),
        *_outbox_ops(settings, event, tenant_id),
    ]
    tenants_dal.transact_write(ops)
    return (
        ProvisionResult(tenant=tenant, api_key=keys.issued(raw, record), secret_included=True),
        event,
    )


def _replay(rec: dict[str, Any]) -> ProvisionResult:
    stored = json.loads(rec["response"])
    return ProvisionResult(
        tenant=Tenant.model_validate(stored["tenant"]),
        api_key=ApiKey.model_validate(stored["api_key"]),
        secret_included=False,
        replayed=True,
    )


def provision_sync(
    req: TenantCreate, idempotency_key: str | None, settings: Settings | None = None
) -> tuple[ProvisionResult, list[CloudEvent]]:
    """Provision a tenant, or resume/replay the request made earlier with the same key."""
    settings = settings or get_settings()
    idem = _check_idempotency_key(idempotency_key)
    owner = uuid.uuid4().hex
    rec, done = _claim(req, idem, owner, settings)
    if done:
        return _replay(rec), []
    tenant_id = rec["tenant_id"]
    try:
        if not rec.get("tenant_created"):
            tenants_dal.put_tenant(
                settings.tenants_table,
                {
                    "tenant_id": tenant_id,
                    "name": req.name,
                    "email": req.email,
                    "plan": req.plan,
                    "status": "provisioning",
                    "stripe": "pending",
                    "created_at": rec["created_at"],
                    "version": 0,
                },
            )
            _record_step(settings, idem, owner, {"tenant_created": True})
        stripe = _stripe_steps(rec, req, owner, settings)
        try:
            result, event = _complete(rec, req, owner, stripe, settings)
        except ConditionFailed:
            # Our lease was taken over (we were too slow) and the other worker may be done.
            current = tenants_dal.get_provision(settings.tenants_table, idem)
            if current is not None and current.get("state") == "completed":
                metrics.add_metric(name="ProvisioningReplayed", unit="Count", value=1)
                return _replay(current), []
            raise ProvisioningInProgress(
                "another worker is finishing this request; retry shortly",
                headers={"Retry-After": "2"},
            ) from None
    except BaseException:
        _release(settings, idem, owner)
        metrics.add_metric(name="ProvisioningFailed", unit="Count", value=1)
        raise
    metrics.add_metric(name="TenantsProvisioned", unit="Count", value=1)
    logger.info(
        "tenant provisioned",
        extra={
            "tenant_id": tenant_id,
            "plan": req.plan,
            "stripe": stripe["stripe"],
            "key_prefix": result.api_key.prefix,
        },
    )
    return result, [event]


async def provision(
    req: TenantCreate, idempotency_key: str | None, settings: Settings | None = None
) -> ProvisionResult:
    result, events = await asyncio.to_thread(provision_sync, req, idempotency_key, settings)
    await publish(events, settings)
    return result


# -- reading -------------------------------------------------------------------------------


def get_tenant(tenant_id: str, settings: Settings | None = None) -> Tenant:
    settings = settings or get_settings()
    item = tenants_dal.get_tenant(settings.tenants_table, tenant_id)
    if item is None:
        raise NotFound(f"tenant {tenant_id} not found")
    return _tenant(item)


def _decode_cursor(cursor: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor.encode() + b"=" * (-len(cursor) % 4))
        start = json.loads(raw)
    except (binascii.Error, ValueError):
        raise ValidationFailed("the cursor is not valid") from None
    if not isinstance(start, dict) or set(start) != {"pk", "sk", "gsi1pk", "gsi1sk"}:
        raise ValidationFailed("the cursor is not valid")
    return start


def _encode_cursor(start: dict[str, Any]) -> str:
    raw = json.dumps(start, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def list_tenants(
    *,
    status: str | None = None,
    plan: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
    settings: Settings | None = None,
) -> TenantPage:
    """Tenants oldest first, filtered by status and plan; ``next_cursor`` continues the list."""
    settings = settings or get_settings()
    start = _decode_cursor(cursor) if cursor else None
    found: list[Tenant] = []
    while True:
        items, start = tenants_dal.list_tenants(
            settings.tenants_table, limit=max(limit, 25), start_key=start
        )
        for item in items:
            if (status and item.get("status") != status) or (plan and item.get("plan") != plan):
                continue
            found.append(_tenant(item))
            if len(found) == limit:
                # Continue after this item, not after the page: the rest of the page is unseen.
                return TenantPage(
                    items=found, next_cursor=_encode_cursor(tenants_dal.page_key(item))
                )
        if start is None:
            return TenantPage(items=found, next_cursor=None)


# -- lifecycle -----------------------------------------------------------------------------


def _transition(
    tenant: Tenant,
    settings: Settings,
    *,
    sets: dict[str, Any],
    event_type: str | None,
    data: dict[str, Any],
    removes: Sequence[str] = (),
) -> tuple[Tenant, list[CloudEvent]]:
    """Apply ``sets`` to the profile if nobody changed it since we read it (version check),
    with the event in the outbox in the same transaction."""
    version = tenant.version + 1
    set_, names, vals = _set_expr({**sets, "updated_at": now_iso(), "version": version})
    if removes:
        names.update({f"#r{i}": k for i, k in enumerate(removes)})
        set_ += " REMOVE " + ", ".join(f"#r{i}" for i in range(len(removes)))
    vals[":expected"] = tenant.version
    names["#ver"] = "version"
    table = settings.tenants_table
    ops = [
        tenants_dal.update_op(
            table,
            tenants_dal.profile_key(tenant.tenant_id),
            set_=set_,
            condition="#ver = :expected",
            names=names,
            vals=vals,
        )
    ]
    events: list[CloudEvent] = []
    if event_type:
        event = _event(event_type, tenant.tenant_id, version, data)
        ops.extend(_outbox_ops(settings, event, tenant.tenant_id))
        events.append(event)
    try:
        tenants_dal.transact_write(ops)
    except ConditionFailed:
        raise Conflict(
            f"tenant {tenant.tenant_id} changed concurrently; read it and retry"
        ) from None
    forget()  # plan and status follow at once in this process
    return get_tenant(tenant.tenant_id, settings), events


def _live(tenant_id: str, settings: Settings) -> Tenant:
    tenant = get_tenant(tenant_id, settings)
    if tenant.status == "deleted":
        raise Conflict(f"tenant {tenant_id} is offboarded")
    if tenant.status == "provisioning":
        raise Conflict(f"tenant {tenant_id} is still provisioning; retry the create request")
    return tenant


def update_sync(
    tenant_id: str, change: TenantUpdate, settings: Settings | None = None
) -> tuple[Tenant, list[CloudEvent]]:
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
        from meterbridge.logic.billing import plan_parts

        profile = tenants_dal.get_tenant(settings.tenants_table, tenant_id) or {}
        record = plan_parts.change_record(tenant_id, tenant.plan, change.plan, settings)
        sets["plan_changes"] = plan_parts.with_change(profile.get("plan_changes") or [], record)
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
    from meterbridge.adapters.stripe_billing import get_gateway, plan_price

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


def suspend_sync(
    tenant_id: str, settings: Settings | None = None
) -> tuple[Tenant, list[CloudEvent]]:
    """Suspend (403 on every usage call from now on); suspending twice changes nothing."""
    settings = settings or get_settings()
    tenant = _live(tenant_id, settings)
    if tenant.status == "suspended":
        return tenant, []
    logger.info("tenant suspended", extra={"tenant_id": tenant_id})
    return _transition(
        tenant, settings, sets={"status": "suspended"}, event_type="tenant.suspended", data={}
    )


def resume_sync(
    tenant_id: str, settings: Settings | None = None
) -> tuple[Tenant, list[CloudEvent]]:
    settings = settings or get_settings()
    tenant = _live(tenant_id, settings)
    if tenant.status == "active":
        return tenant, []
    logger.info("tenant resumed", extra={"tenant_id": tenant_id})
    return _transition(
        tenant, settings, sets={"status": "active"}, event_type="tenant.resumed", data={}
    )


OFFBOARD_ATTEMPTS = 3


def offboard_sync(
    tenant_id: str, settings: Settings | None = None
) -> tuple[Tenant, list[CloudEvent]]:
    """Revoke every key, cancel the subscription, mark deleted. Each step is idempotent, so a
    retry after a Stripe failure finishes the job; an offboarded tenant answers as it is."""
    settings = settings or get_settings()
    tenant = get_tenant(tenant_id, settings)
    if tenant.status == "deleted":
        return tenant, []
    from meterbridge.adapters.stripe_billing import get_gateway

    revoked = keys.revoke_all(tenant_id, settings)
    gateway = get_gateway(settings)
    final_invoice = None
    if gateway is not None and tenant.stripe_customer_id:
        # Bill the last, partial period before the subscription ends (the webhook would move
        # an ended subscription's tenant to free, and price nothing): docs/billing.md#offboarding.
        from meterbridge.logic.billing.final import bill_final_period

        profile = tenants_dal.update_tenant(
            settings.tenants_table,
            tenant_id,
            set_="SET offboarding_at = if_not_exists(offboarding_at, :at)",
            condition="attribute_exists(pk)",
            vals={":at": now_iso()},
        )
        final_invoice = bill_final_period(profile or {}, settings)
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
        except Conflict:
            tenant = get_tenant(tenant_id, settings)
            if tenant.status == "deleted":
                return tenant, []
            if attempt == OFFBOARD_ATTEMPTS - 1:
                raise
    logger.info("tenant offboarded", extra={"tenant_id": tenant_id, "keys_revoked": revoked})
    return done


async def _run(fn: Any, *args: Any) -> Tenant:
    tenant, events = await asyncio.to_thread(fn, *args)
    await publish(events)
    return tenant  # type: ignore[no-any-return]


async def update(tenant_id: str, change: TenantUpdate) -> Tenant:
    return await _run(update_sync, tenant_id, change)


async def suspend(tenant_id: str) -> Tenant:
    return await _run(suspend_sync, tenant_id)


async def resume(tenant_id: str) -> Tenant:
    return await _run(resume_sync, tenant_id)


async def offboard(tenant_id: str) -> Tenant:
    return await _run(offboard_sync, tenant_id)


__all__ = [
    "IssuedKey",
    "ProvisioningInProgress",
    "get_tenant",
    "list_tenants",
    "offboard",
    "provision",
    "provision_sync",
    "publish",
    "resume",
    "suspend",
    "update",
]
