"""Ingest for operators' imports (``meterbridge backfill``, docs/flush.md#backfill).

In the dev kit, not the layer: no Lambda runs a backfill; the CLI calls the layer's ingest.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from meterbridge.logic.ingest import ingest
from meterbridge.logic.ingest.parse import MAX_AGE
from meterbridge.models.usage import IngestResult
from meterbridge.settings import Settings, get_settings


def ingest_events(
    tenant_id: str,
    events: list[dict[str, Any]],
    *,
    backfill: bool = False,
    max_age_days: int | None = None,
    settings: Settings | None = None,
) -> IngestResult:
    """Ingest for operators' imports (``meterbridge backfill``): same validation and dedupe.

    The tenant is named by the operator (not by a key); a deleted tenant is refused.
    """
    from meterbridge.dal import tenants as tenants_dal
    from meterbridge.errors import NotFound

    settings = settings or get_settings()
    tenant = tenants_dal.get_tenant(settings.tenants_table, tenant_id)
    if tenant is None or tenant.get("status") == "deleted":
        raise NotFound(f"tenant {tenant_id!r} does not exist")
    max_age = timedelta(days=max_age_days) if max_age_days is not None else MAX_AGE
    result, _, _ = ingest(
        tenant_id,
        tenant.get("plan", "free"),
        events,
        settings=settings,
        max_age=max_age,
        backfill=backfill,
    )
    return result
