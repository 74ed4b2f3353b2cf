"""The reconcile report: metered overage against Stripe's invoices, per tenant and meter
(docs/billing.md#reconcile-runbook). Apart from ``models.billing`` because only the admin API's
reconcile route and the CLI build it: the usage API, which loads ``models.billing``, does not
pay for building these pydantic models at its init (docs/performance/cold_start.md)."""

# No ``from __future__ import annotations`` here: pydantic would compile and evaluate every
# field's annotation string when the model class is built (docs/performance/cold_start.md).
from pydantic import BaseModel, Field


class ReconcileRow(BaseModel):
    tenant_id: str
    meter: str
    metered_cents: int
    invoiced_cents: int
    difference_cents: int


class ReconcileReport(BaseModel):
    period: str
    rows: list[ReconcileRow]
    difference_cents: int
    # Sum of the positive differences: overage nobody has been invoiced for.
    unbilled_cents: int
    # Stripe invoice item ids ``--fix`` made or found.
    fixed: list[str] = Field(default_factory=list)
