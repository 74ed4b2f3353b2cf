"""Threshold alerts: ``usage.threshold_reached`` once per period, meter and threshold."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from decimal import Decimal

from meterbridge.dal.outbox.repository import IngestOutbox
from meterbridge.dal.usage import UsageStore
from meterbridge.logic.ingest.quota import COUNTER_TTL_S, Written
from meterbridge.models.cloudevent import ALERTS_SOURCE, CloudEvent, stable_id
from meterbridge.observability import logger, metrics
from meterbridge.plans import Plan, as_number, catalog

THRESHOLDS = (80, 100)
_ADDITIVE = ("COUNT", "SUM", "UNIQUE_COUNT")


def added(written: Written) -> dict[str, Decimal | None]:
    """Per meter, what the stored events added this period: an upper bound of the increase
    for COUNT, SUM and UNIQUE_COUNT; ``None`` (read the value) for the others."""
    cat = catalog()
    added: dict[str, Decimal | None] = {}
    for fed, _ in written:
        for f in fed:
            meter, agg = f.feed.meter, cat.meters[f.feed.meter].aggregation
            step = Decimal(1) if agg in ("COUNT", "UNIQUE_COUNT") else f.feed.value
            previous = added.get(meter, Decimal(0))
            # MAX/MIN/LATEST are not additive, and a credit (a negative SUM) could make the
            # estimate overshoot: those read the value.
            if previous is None or step is None or step < 0 or agg not in _ADDITIVE:
                added[meter] = None
            else:
                added[meter] = previous + step
    return added


# Totals this process read recently, per (table, tenant, period, meter): while the estimate
# (read total + what this process added since) stays well below the first threshold, the
# request skips the counter read. Other processes' additions are seen at the next read, so an
# alert fires at most TOTALS_TTL_S after the crossing. Past the last threshold, never again.
TOTALS_TTL_S = 60.0
_NEAR_PERCENT = THRESHOLDS[0] - 10
_totals: dict[tuple[str, str, str, str], tuple[float, Decimal]] = {}
_totals_lock = threading.Lock()


def _far_from_thresholds(
    key: tuple[str, str, str, str], added: Decimal | None, limit: Decimal
) -> bool:
    if added is None:
        return False
    with _totals_lock:
        hit = _totals.get(key)
        if hit is None or time.monotonic() - hit[0] >= TOTALS_TTL_S:
            return False
        estimate = hit[1] + added
        _totals[key] = (hit[0], estimate)
    if estimate * 100 >= limit * THRESHOLDS[-1] and hit[1] * 100 >= limit * THRESHOLDS[-1]:
        return True  # every threshold was already passed when last read: nothing left to fire
    return estimate * 100 < limit * _NEAR_PERCENT


def _remember_total(key: tuple[str, str, str, str], total: Decimal) -> None:
    with _totals_lock:
        _totals[key] = (time.monotonic(), total)


def reached(
    tenant_id: str,
    plan: Plan,
    period: str,
    added: dict[str, Decimal | None],
    now: datetime,
    *,
    outbox: IngestOutbox,
    usage: UsageStore,
) -> list[CloudEvent]:
    """``usage.threshold_reached`` once per period, meter and threshold (80% and 100%), for
    every aggregation: the meter's value against the plan's limit."""
    alerts: list[CloudEvent] = []
    expires = int(now.timestamp()) + COUNTER_TTL_S
    cat = catalog()
    for meter in added:
        limit = plan.limit(meter)
        if not limit or limit <= 0:
            continue
        key = (usage.table, tenant_id, period, meter)
        if _far_from_thresholds(key, added[meter], limit):
            continue
        total = usage.total(tenant_id, period, meter, cat.meters[meter].aggregation)
        _remember_total(key, total)
        for pct in THRESHOLDS:
            if total * 100 < limit * pct:
                continue
            if not usage.mark_threshold(tenant_id, period, meter, pct, expires):
                continue
            alert = CloudEvent(
                id=stable_id(tenant_id, period, meter, str(pct)),
                source=ALERTS_SOURCE,
                type="usage.threshold_reached",
                subject=tenant_id,
                data={
                    "tenant_id": tenant_id,
                    "meter": meter,
                    "threshold_percent": pct,
                    "used": as_number(total),
                    "limit": as_number(limit),
                    "period": period,
                    "plan": plan.id,
                },
            )
            outbox.enqueue(alert, tenant_id=tenant_id, kind="usage")
            logger.info("usage threshold reached", extra={"meter": meter, "threshold": pct})
            metrics.add_metric(name="ThresholdAlerts", unit="Count", value=1)
            alerts.append(alert)
    return alerts
