"""Billing models: the parts of a period split by plan changes, the overage lines of a
period, the records of the lines meterbridge adds to Stripe invoices, what ``invoice.created``
did. The reconcile report is in ``models.reconcile``: the admin API's, not the usage API's."""

# No ``from __future__ import annotations`` here: pydantic would compile and evaluate every
# field's annotation string when the model class is built (docs/performance/cold_start.md).
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    # A name only (the dataclasses below do not evaluate it): the admin API imports this module
    # at its cold start, and loads the plan catalogue only in the routes that use it.
    from meterbridge.plans import Plan

RecordState = Literal["pending", "billed"]


@dataclass(frozen=True)
class OverageLine:
    """One priced meter's charge above zero for a period."""

    meter: str
    amount_cents: int
    currency: str
    description: str


@dataclass(frozen=True)
class Part:
    """A part of a period with one plan in force (docs/billing.md#plan-changes)."""

    plan: "Plan"
    start: datetime
    end: datetime
    share: Decimal  # of the period's seconds
    before: Mapping[str, Any]  # additive meters' totals at the part's start
    after: Mapping[str, Any] | None  # ... at its end; None: the period's total now


@dataclass(frozen=True)
class PartCharge:
    """One part's usage of a meter, its prorated limit, overage and (unrounded) charge."""

    plan: "Plan"
    start: datetime
    end: datetime
    used: Decimal
    limit: Decimal | None
    overage: Decimal
    cents: Decimal  # unrounded


@dataclass(frozen=True)
class BillingRecord:
    """One invoice line meterbridge adds: ``pending`` once claimed (the Stripe call may or may
    not have happened), ``billed`` once the Stripe invoice item exists (``item_id``). It holds
    everything the Stripe call sends, so a redelivery repeats exactly the same call."""

    tenant_id: str
    period: str  # the usage period the line bills
    meter: str
    invoice_period: str  # the invoice carrying it: a period, or ``fix-<cents>`` for --fix
    invoice_id: str  # "" for a pending invoice item of the customer (--fix)
    customer_id: str
    amount_cents: int
    currency: str
    description: str
    period_start: int
    period_end: int
    idempotency_key: str
    claimed_at: str
    state: RecordState = "pending"
    item_id: str | None = None
    billed_at: str | None = None


@dataclass
class InvoiceBilling:
    """What ``invoice.created`` did for the period its cycle invoice closes."""

    outcome: str  # applied | ignored | unmatched
    reason: str = ""
    tenant_id: str | None = None
    period: str | None = None
    items: list[str] = field(default_factory=list)
