"""The CloudEvent meterbridge stores in its outbox and sends to OpenMeter and NATS.

``id`` and ``source`` are stable for an event's whole life, so a re-send after a crash is
recognised as the same event by OpenMeter and by NATS (``Nats-Msg-Id``).
"""

# No ``from __future__ import annotations`` here: pydantic would compile and evaluate every
# field's annotation string when the model class is built, which the cold start pays
# (docs/performance/cold_start.md).
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from meterbridge.timestamps import rfc3339

# Sources: one per producer; usage events carry the tenant so tenant-chosen ids never collide.
ADMIN_SOURCE = "//meterbridge/admin"
STRIPE_SOURCE = "//meterbridge/stripe"
ALERTS_SOURCE = "//meterbridge/alerts"

Kind = Literal["usage", "billing", "tenant"]

# Types meterbridge itself emits (docs/billing-events.md): a tenant may not send them as usage,
# or a meter on ``type`` would count a tenant's event as a billing or lifecycle event.
RESERVED_TYPE_PREFIXES = ("payment.", "subscription.", "tenant.", "key.", "meterbridge.")
RESERVED_TYPES = frozenset({"usage.threshold_reached"})


def is_reserved_type(event_type: str) -> bool:
    lowered = event_type.lower()
    return lowered in RESERVED_TYPES or lowered.startswith(RESERVED_TYPE_PREFIXES)


# Namespace for deterministic event ids (uuid5) of events meterbridge itself emits.
ID_NAMESPACE = uuid.UUID("6f1d8a52-3c1e-4f55-9a4b-9c7e2f0b6d11")


def usage_source(tenant_id: str) -> str:
    return f"//meterbridge/tenants/{tenant_id}"


def stable_id(*parts: str) -> str:
    """A deterministic id: the same inputs always give the same event id (safe re-emission)."""
    return str(uuid.uuid5(ID_NAMESPACE, "/".join(parts)))


# The CloudEvent ``time`` default, and the name the outbox and the flush import.
now_rfc3339 = rfc3339


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 event in structured JSON mode."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: str
    source: str
    type: str
    subject: str | None = None
    time: str = Field(default_factory=now_rfc3339)
    datacontenttype: str | None = "application/json"
    dataschema: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    def wire(self) -> dict[str, Any]:
        """The JSON object sent to OpenMeter and NATS (no nulls)."""
        return self.model_dump(exclude_none=True)
