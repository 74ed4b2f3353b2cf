"""Stripe-driven state on the tenant profile (``TENANT#<id>``/``PROFILE``), with ordering guards.

Stripe does not promise order, so every write here is conditional:

- Subscription state (plan, subscription id, and the map ``stripe_subscription`` with status,
  price, event id, ``at`` and ``rank``) carries ``stripe_state_key = created * 100 + rank``: the
  Stripe event's ``created``, then the tie-break inside one second (``created`` < ``updated`` <
  ``deleted``, terminal statuses above all). A write applies only when its key is greater; an
  older event is a no-op. The key only ever grows, so a profile read showing a key at least as
  great proves the write would be refused.
- Failed payments are counted once per Stripe event id (the set ``payment_failed_events``) and
  only when newer than the last payment (``payments_reset_at``); ``invoice.paid`` resets the
  count only when newer than the last counted failure (``last_payment_failed_at``).
- Suspension and resumption are conditions on the stored count and status, so a redelivery after
  a crash finishes the step and an operator's own suspension is never lifted by a payment.
"""

from __future__ import annotations

import contextlib
from typing import Any

from meterbridge.dal import dynamo
from meterbridge.dal.tenants import PROFILE_SK, tenant_pk
from meterbridge.errors import ConditionFailed
from meterbridge.timestamps import rfc3339

CUSTOMER_INDEX = "by_stripe_customer"
PAYMENT_SUSPENSION_REASON = "payment_failed"


def _key(tenant_id: str) -> dict[str, str]:
    return {"pk": tenant_pk(tenant_id), "sk": PROFILE_SK}


def _now() -> str:
    return rfc3339(timespec="seconds")


def get_profile(table: str, tenant_id: str) -> dict[str, Any] | None:
    return dynamo.get(table, _key(tenant_id))


def link_customer(table: str, tenant_id: str, customer_id: str) -> dict[str, Any]:
    """Set the profile's ``stripe_customer_id`` (idempotent; refuses to relink to another)."""
    updated = dynamo.update(
        table,
        _key(tenant_id),
        set_="SET stripe_customer_id = :cus",
        condition=(
            "attribute_exists(pk) AND"
            " (attribute_not_exists(stripe_customer_id) OR stripe_customer_id = :cus)"
        ),
        vals={":cus": customer_id},
    )
    return updated or {}


def find_by_customer(table: str, customer_id: str) -> dict[str, Any] | None:
    """The profile linked to a Stripe customer: the customer map item, else the GSI."""
    mapped = dynamo.get(table, {"pk": f"STRIPE#{customer_id}", "sk": "CUSTOMER"})
    if mapped and mapped.get("tenant_id"):
        profile = get_profile(table, str(mapped["tenant_id"]))
        if profile:
            return profile
    items, _ = dynamo.query(
        table,
        index=CUSTOMER_INDEX,
        key_condition="stripe_customer_id = :cus",
        vals={":cus": customer_id},
        limit=10,
    )
    profiles = [i for i in items if i.get("sk") == PROFILE_SK]
    return profiles[0] if profiles else None


def _set_clause(fields: dict[str, Any]) -> tuple[str, dict[str, str], dict[str, Any]]:
    """``SET #a = :a, ...`` for the non-None ``fields`` (None values cannot be serialised)."""
    names: dict[str, str] = {}
    vals: dict[str, Any] = {}
    parts: list[str] = []
    for i, (attr, value) in enumerate(fields.items()):
        if value is None:
            continue
        names[f"#f{i}"] = attr
        vals[f":f{i}"] = value
        parts.append(f"#f{i} = :f{i}")
    return "SET " + ", ".join(parts), names, vals


# Within one second of ``created``, the rank orders lifecycle steps (below 100, see translate).
_RANK_SPAN = 100


def state_key(at: int, rank: int) -> int:
    """The ordering guard as one sortable number: ``created`` first, then the rank."""
    if not 0 <= rank < _RANK_SPAN:
        raise ValueError(f"rank {rank} outside 0..{_RANK_SPAN - 1}")
    return at * _RANK_SPAN + rank


def stored_state_key(profile: dict[str, Any] | None) -> int | None:
    """The subscription ordering key a profile holds (None before any subscription event)."""
    key = (profile or {}).get("stripe_state_key")
    return int(key) if key is not None else None


def subscription_update(
    table: str,
    tenant_id: str,
    *,
    at: int,
    rank: int,
    event_id: str,
    subscription_id: str | None,
    status: str | None,
    price_id: str | None,
    plan: str | None,
    ends_subscription: bool,
) -> dict[str, Any]:
    """The guarded subscription write as an ``UpdateItem`` request with plain values (not yet
    serialised): ``apply_subscription`` sends it alone, ``webhooks.enqueue_with_update`` in a
    transaction with the outbox put.

    One guard attribute (``stripe_state_key``) and one map (``stripe_subscription``) keep the
    expression short: moto parses and validates every clause, and this write is on the webhook's
    request path. ``stripe_subscription_id``, ``plan`` and ``updated_at`` stay top level: other
    code reads them. An event that ends a subscription applies only to the tenant's current
    subscription, so the end of a replaced subscription never downgrades the tenant.
    """
    details = {"at": at, "rank": rank, "event": event_id, "status": status, "price": price_id}
    sets = ["stripe_state_key = :key", "stripe_subscription = :sub_state", "updated_at = :now"]
    vals: dict[str, Any] = {
        ":key": state_key(at, rank),
        ":sub_state": {k: v for k, v in details.items() if v is not None},
        ":now": _now(),
    }
    if subscription_id:
        sets.append("stripe_subscription_id = :sub")
        vals[":sub"] = subscription_id
    if plan:
        sets.append("#plan = :plan")
        vals[":plan"] = plan
    condition = (
        "attribute_exists(pk)"
        " AND (attribute_not_exists(stripe_state_key) OR stripe_state_key < :key)"
    )
    if ends_subscription and subscription_id:
        condition += (
            " AND (attribute_not_exists(stripe_subscription_id) OR stripe_subscription_id = :sub)"
        )
    request: dict[str, Any] = {
        "TableName": table,
        "Key": _key(tenant_id),
        "UpdateExpression": "SET " + ", ".join(sets),
        "ConditionExpression": condition,
        "ExpressionAttributeValues": vals,
    }
    if plan:
        request["ExpressionAttributeNames"] = {"#plan": "plan"}
    return request


def apply_subscription(table: str, tenant_id: str, **fields: Any) -> bool:
    """Record a subscription's state if it is newer than the stored one (``fields`` are those
    of ``subscription_update``). False when the event is older (or the same): nothing changed."""
    request = subscription_update(table, tenant_id, **fields)
    return dynamo.update_if(
        table,
        request["Key"],
        set_=request["UpdateExpression"],
        condition=request["ConditionExpression"],
        names=request.get("ExpressionAttributeNames"),
        vals=request["ExpressionAttributeValues"],
    )


def record_checkout(
    table: str, tenant_id: str, *, customer_id: str | None, session_id: str
) -> dict[str, Any] | None:
    """Note a completed Checkout: link its customer if the profile has none yet."""
    if not customer_id:
        return None
    try:
        return dynamo.update(
            table,
            _key(tenant_id),
            set_="SET stripe_customer_id = :cus, stripe_checkout_session = :sess",
            condition=(
                "attribute_exists(pk) AND"
                " (attribute_not_exists(stripe_customer_id) OR stripe_customer_id = :cus)"
            ),
            vals={":cus": customer_id, ":sess": session_id},
        )
    except ConditionFailed:
        return None


def count_failed_payment(
    table: str, tenant_id: str, *, at: int, event_id: str, note_last: bool = True
) -> tuple[bool, dict[str, Any]]:
    """Count one failed payment (once per event id, only if newer than the last payment).

    Returns (counted now, profile after). ``note_last=False`` leaves ``note_last_failure`` to
    the caller (it is independent of the count, so it can run at the same time).
    """
    try:
        profile = dynamo.update(
            table,
            _key(tenant_id),
            set_=(
                "SET failed_payments = if_not_exists(failed_payments, :zero) + :one,"
                " updated_at = :now ADD payment_failed_events :evts"
            ),
            condition=(
                "attribute_exists(pk)"
                " AND (attribute_not_exists(payment_failed_events)"
                " OR NOT contains(payment_failed_events, :evt))"
                " AND (attribute_not_exists(payments_reset_at) OR payments_reset_at < :at)"
            ),
            vals={
                ":zero": 0,
                ":one": 1,
                ":now": _now(),
                ":evts": {event_id},
                ":evt": event_id,
                ":at": at,
            },
        )
        counted = True
    except ConditionFailed:
        profile, counted = get_profile(table, tenant_id), False
    if note_last:
        note_last_failure(table, tenant_id, at=at)
    return counted, profile or {}


def note_last_failure(table: str, tenant_id: str, *, at: int) -> None:
    """Keep ``last_payment_failed_at`` as the newest failure: it bounds which payments reset."""
    with contextlib.suppress(ConditionFailed):
        dynamo.update(
            table,
            _key(tenant_id),
            set_="SET last_payment_failed_at = :at",
            condition=(
                "attribute_exists(pk) AND"
                " (attribute_not_exists(last_payment_failed_at) OR last_payment_failed_at < :at)"
            ),
            vals={":at": at},
            return_new=False,
        )


def may_suspend_for_payments(profile: dict[str, Any], *, threshold: int) -> bool:
    """Whether ``suspend_for_payments``' condition can hold for this read of the profile.

    Only a counted failure raises the count, and the delivery that counts it checks again: a
    read taken after our own count that shows the condition false needs no write.
    """
    return profile.get("status") == "active" and int(profile.get("failed_payments") or 0) >= (
        threshold
    )


def suspend_for_payments(table: str, tenant_id: str, *, threshold: int) -> bool:
    """Suspend an active tenant whose stored failed-payment count reached ``threshold``."""
    return dynamo.update_if(
        table,
        _key(tenant_id),
        set_="SET #st = :suspended, suspended_reason = :reason, suspended_at = :now",
        condition="#st = :active AND failed_payments >= :threshold",
        names={"#st": "status"},
        vals={
            ":suspended": "suspended",
            ":active": "active",
            ":reason": PAYMENT_SUSPENSION_REASON,
            ":now": _now(),
            ":threshold": threshold,
        },
    )


def record_payment(table: str, tenant_id: str, *, at: int, invoice_id: str | None) -> bool:
    """Reset the failed-payment count if this payment is newer than the last failure and reset."""
    set_, names, vals = _set_clause(
        {
            "failed_payments": 0,
            "payments_reset_at": at,
            "last_paid_invoice": invoice_id,
            "updated_at": _now(),
        }
    )
    vals[":at"] = at
    return dynamo.update_if(
        table,
        _key(tenant_id),
        set_=set_ + " REMOVE payment_failed_events",
        condition=(
            "attribute_exists(pk)"
            " AND (attribute_not_exists(payments_reset_at) OR payments_reset_at < :at)"
            " AND (attribute_not_exists(last_payment_failed_at)"
            " OR last_payment_failed_at < :at)"
        ),
        names=names,
        vals=vals,
    )


def resume_after_payment(table: str, tenant_id: str, *, threshold: int) -> bool:
    """Lift a suspension this module made, once the stored count is below ``threshold``."""
    return dynamo.update_if(
        table,
        _key(tenant_id),
        set_="SET #st = :active, resumed_at = :now REMOVE suspended_reason, suspended_at",
        condition=(
            "#st = :suspended AND suspended_reason = :reason AND failed_payments < :threshold"
        ),
        names={"#st": "status"},
        vals={
            ":active": "active",
            ":suspended": "suspended",
            ":reason": PAYMENT_SUSPENSION_REASON,
            ":now": _now(),
            ":threshold": threshold,
        },
    )
