"""Which tenant a Stripe object belongs to (docs/stripe-webhooks.md#tenant-resolution)."""

from __future__ import annotations

from typing import Any

from meterbridge.dal import tenant_state
from meterbridge.models.stripe import BillingChange
from meterbridge.observability import logger
from meterbridge.settings import Settings


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
