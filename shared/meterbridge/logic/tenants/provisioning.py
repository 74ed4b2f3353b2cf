"""Provisioning a tenant: idempotent per Idempotency-Key, resumable after a crash.

The provisioning record's lease (``dal.provisioning``) decides which worker does the work;
identical requests arriving meanwhile wait for it a little and then get a 409 with
``Retry-After``. Each step (profile, Stripe customer, subscription) is recorded when done, so a
retry resumes where the last attempt stopped; the last step (first key, tenant active, event in
the outbox, record completed) is one transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from typing import Any

from meterbridge.adapters.stripe_billing import get_gateway, plan_price
from meterbridge.dal import provisioning as provisioning_dal
from meterbridge.dal import tenants as tenants_dal
from meterbridge.errors import Conflict, IdempotencyMismatch, LeaseLost, ValidationFailed
from meterbridge.logic.keys import lifecycle as keys
from meterbridge.logic.tenants.events import lifecycle_event, publish
from meterbridge.models.cloudevent import CloudEvent
from meterbridge.models.tenant import (
    IDEMPOTENCY_KEY_RE,
    ApiKey,
    ProvisionRecord,
    ProvisionResult,
    Tenant,
    TenantCreate,
)
from meterbridge.observability import logger, metrics
from meterbridge.settings import Settings, get_settings
from meterbridge.timestamps import rfc3339

# The Stripe gateway and the plan catalogue are imported inside the steps that use them: the
# admin API's other routes (reads, keys, dead letters) never need them, and importing them
# here would cost every cold start of the admin function (docs/performance/cold_start.md).

# A worker holds a provisioning record this long; a crashed worker's record is taken over after.
LEASE_S = 60
# How long an identical concurrent request waits for the first one before a 409.
WAIT_S = 5.0
POLL_S = 0.1
# Idempotency keys are remembered this long (TTL on the PROVISION item).
PROVISION_TTL_S = 30 * 24 * 3600


class ProvisioningInProgress(Conflict):
    """Another request with the same Idempotency-Key is still provisioning."""

    code = "provisioning_in_progress"


def new_tenant_id() -> str:
    return "t_" + uuid.uuid4().hex[:16]


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
) -> tuple[ProvisionRecord, bool]:
    """The provisioning record with this worker's lease, or (completed record, True) to replay.

    Starting the record decides who works; identical requests arriving meanwhile poll it for up
    to ``WAIT_S`` and then get a 409 with ``Retry-After``.
    """
    records = provisioning_dal.repository(settings)
    body_hash = _request_hash(req)
    deadline = time.monotonic() + WAIT_S
    while True:
        now = time.time()
        record = ProvisionRecord(
            idempotency_key=idem,
            request_hash=body_hash,
            tenant_id=new_tenant_id(),
            lease_owner=owner,
            lease_until=int(now) + LEASE_S,
            created_at=rfc3339(),
            expires_at=int(now) + PROVISION_TTL_S,
        )
        if records.start(record):
            return record, False
        existing = records.get(idem)
        if existing is None:
            continue  # expired between our put and get: claim it again
        if existing.request_hash != body_hash:
            raise IdempotencyMismatch(
                "this Idempotency-Key was used with a different request body",
                details={"tenant_id": existing.tenant_id},
            )
        if existing.state == "completed":
            return existing, True
        if existing.lease_until <= now:
            try:
                taken = records.take_over(
                    idem,
                    owner=owner,
                    expired_owner=existing.lease_owner,
                    until=int(now) + LEASE_S,
                    now=int(now),
                )
                return taken, False
            except LeaseLost:
                pass  # another worker took it over or finished; look again
        if time.monotonic() >= deadline:
            raise ProvisioningInProgress(
                "a request with this Idempotency-Key is still provisioning; retry shortly",
                headers={"Retry-After": "2"},
                details={"tenant_id": existing.tenant_id},
            )
        time.sleep(POLL_S)


def _release(settings: Settings, idem: str, owner: str) -> None:
    """Give the lease back after a failed step, so a retry resumes at once."""
    try:
        provisioning_dal.repository(settings).release(idem, owner)
    except Exception as exc:  # noqa: BLE001 - the lease also expires on its own
        logger.warning("provisioning lease not released", extra={"error": type(exc).__name__})


def _stripe_steps(
    rec: ProvisionRecord, req: TenantCreate, owner: str, settings: Settings
) -> dict[str, Any]:
    """Customer, then subscription (if the plan has a Stripe price); each recorded when done."""
    tenant_id, idem = rec.tenant_id, rec.idempotency_key
    gateway = get_gateway(settings)
    if gateway is None:
        logger.warning("stripe skipped: STRIPE_API_KEY is empty", extra={"tenant_id": tenant_id})
        return {"stripe": "skipped"}
    records = provisioning_dal.repository(settings)
    customer_id = rec.stripe_customer_id
    if not customer_id:
        customer_id = gateway.create_customer(
            tenant_id=tenant_id,
            name=req.name,
            email=req.email,
            idempotency_key=f"mb-customer-{tenant_id}",
        )
        tenants_dal.repository(settings).link_customer(customer_id, tenant_id)
        records.record(idem, owner, stripe_customer_id=customer_id)
    result: dict[str, Any] = {"stripe": "ok", "stripe_customer_id": customer_id}
    subscription_id = rec.stripe_subscription_id
    price = None if subscription_id else plan_price(gateway, req.plan)
    if price and not subscription_id:
        subscription_id = gateway.create_subscription(
            tenant_id=tenant_id,
            customer_id=customer_id,
            price_id=price,
            idempotency_key=f"mb-subscription-{tenant_id}",
        )
        records.record(idem, owner, stripe_subscription_id=subscription_id)
    if subscription_id:
        result["stripe_subscription_id"] = subscription_id
    return result


def _complete(
    rec: ProvisionRecord, req: TenantCreate, owner: str, stripe: dict[str, Any], settings: Settings
) -> tuple[ProvisionResult, CloudEvent]:
    """The last step, one transaction: first key, tenant active, event in the outbox, record
    completed with the response to replay (without the secret). Either all of it or none."""
    tenant_id, idem = rec.tenant_id, rec.idempotency_key
    raw, record = keys.new_record(tenant_id, settings)
    now = rfc3339()
    profile = tenants_dal.repository(settings).get(tenant_id)
    assert profile is not None
    activated = {**stripe, "status": "active", "updated_at": now, "version": 1}
    tenant = Tenant.model_validate({**profile.model_dump(exclude_none=True), **activated})
    key_info = keys.to_api_key(record)
    event = lifecycle_event(
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
    provisioning_dal.repository(settings).complete(
        idem,
        owner,
        key=record,
        profile=activated,
        response=json.dumps(replay, separators=(",", ":")),
        at=now,
        event=event,
    )
    return (
        ProvisionResult(tenant=tenant, api_key=keys.issued(raw, record), secret_included=True),
        event,
    )


def _replay(rec: ProvisionRecord) -> ProvisionResult:
    assert rec.response is not None  # a completed record holds its answer
    stored = json.loads(rec.response)
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
    tenant_id = rec.tenant_id
    records = provisioning_dal.repository(settings)
    try:
        if not rec.tenant_created:
            tenants_dal.repository(settings).create(
                Tenant(
                    tenant_id=tenant_id,
                    name=req.name,
                    email=req.email,
                    plan=req.plan,
                    status="provisioning",
                    stripe="pending",
                    created_at=rec.created_at,
                    version=0,
                )
            )
            records.record(idem, owner, tenant_created=True)
        stripe = _stripe_steps(rec, req, owner, settings)
        try:
            result, event = _complete(rec, req, owner, stripe, settings)
        except LeaseLost:
            # Our lease was taken over (we were too slow) and the other worker may be done.
            current = records.get(idem)
            if current is not None and current.state == "completed":
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
