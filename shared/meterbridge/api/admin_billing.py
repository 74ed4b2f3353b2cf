"""``GET /admin/billing/reconcile?period=YYYY-MM``: metered overage against Stripe's invoices
(docs/billing.md#reconcile-runbook). Read-only: adding missing lines is the CLI's ``--fix``."""

import asyncio
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Query

from meterbridge.api.admin_auth import require_admin
from meterbridge.api.errors import error_responses
from meterbridge.models.reconcile import ReconcileReport
from meterbridge.runtime.lazy import LazyLoader

if TYPE_CHECKING:  # pragma: no cover
    from meterbridge.logic.billing import reconcile as reconcile_logic
else:  # the pricing code is not the admin API's cold start (docs/performance)
    reconcile_logic = LazyLoader(
        "reconcile_logic", globals(), "meterbridge.logic.billing.reconcile"
    )

router = APIRouter(prefix="/admin/billing", tags=["admin"], dependencies=[Depends(require_admin)])


@router.get("/reconcile", responses=error_responses(400, 401, 502))
async def reconcile(
    period: Annotated[str, Query(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="YYYY-MM")],
) -> ReconcileReport:
    """Per tenant and meter: metered overage, what Stripe invoiced, and the difference."""
    report = await asyncio.to_thread(reconcile_logic.reconcile, period)
    reconcile_logic.publish_unbilled(report)
    return report
