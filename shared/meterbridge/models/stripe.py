"""Stripe models: the event envelope, what one event means for meterbridge (``BillingChange``)
and what the webhook answers (``WebhookResult``)."""

# No ``from __future__ import annotations`` here: pydantic would compile and evaluate every
# field's annotation string when the model class is built (docs/performance/cold_start.md).
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from meterbridge.models.cloudevent import STRIPE_SOURCE, CloudEvent
from meterbridge.timestamps import rfc3339


class StripeEventData(BaseModel):
    model_config = ConfigDict(extra="allow")
    object: dict[str, Any]
    previous_attributes: dict[str, Any] | None = None


class StripeEvent(BaseModel):
    """The envelope of a Stripe (v1 snapshot) event; ``data.object`` stays a plain dict."""

    model_config = ConfigDict(extra="allow")
    id: str = Field(pattern=r"^evt_[A-Za-z0-9_]+$", max_length=255)
    object: Literal["event"]
    type: str
    created: int
    api_version: str | None = None
    livemode: bool = False
    data: StripeEventData


Action = Literal["checkout", "subscription", "payment_failed", "payment_paid"]


class BillingChange(BaseModel):
    """What one translated Stripe event means for meterbridge."""

    model_config = ConfigDict(frozen=True)
    stripe_event_id: str
    stripe_type: str
    billing_type: str
    action: Action
    created: int
    customer_id: str | None = None
    tenant_hint: str | None = None
    subscription_id: str | None = None
    subscription_status: str | None = None
    price_id: str | None = None
    plan: str | None = None
    ends_subscription: bool = False
    rank: int = 0
    invoice_id: str | None = None
    checkout_session_id: str | None = None
    # The event's Stripe API version (field locations depend on it), kept in the billing event.
    api_version: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    def cloud_event(self, tenant_id: str) -> CloudEvent:
        """The CloudEvent for the outbox and NATS: id and time are stable across redeliveries."""
        return CloudEvent(
            id=self.stripe_event_id,
            source=STRIPE_SOURCE,
            type=self.billing_type,
            subject=tenant_id,
            time=rfc3339(self.created, timespec="auto"),
            data={
                k: v
                for k, v in {**self.data, "stripe_api_version": self.api_version}.items()
                if v is not None
            },
        )


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
