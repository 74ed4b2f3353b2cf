"""What an operator needs at a glance (``meterbridge status``), and the flush's backlog gauges.

Everything comes from DynamoDB, read with the operator's own AWS credentials: the outbox
backlog and its oldest pending event, the dead letters, the last flush result (recorded by the
flush with ``record_flush``), and the top tenants by usage this period. Circuit breakers live in
process memory: the OpenMeter breaker is the one the last flush run saw (stored with its
result); the NATS breaker is read from a streaming task's ``/metrics`` when a URL is given.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from meterbridge.dal import status as status_dal
from meterbridge.models.flush import FlushResult
from meterbridge.models.status import (
    Breakers,
    LastFlush,
    OutboxGauges,
    OutboxStatus,
    RecoveryWindow,
    Status,
    TenantUsage,
)
from meterbridge.resilience import BreakerState
from meterbridge.runtime.lazy import LazyLoader
from meterbridge.settings import Settings, get_settings
from meterbridge.timestamps import rfc3339

if TYPE_CHECKING:
    import httpx
else:
    httpx = LazyLoader("httpx", globals(), "httpx")

BREAKER_NAMES = {int(s): s.name.lower() for s in BreakerState}
_NATS_STATE = re.compile(r"^meterbridge_nats_circuit_state(?:\{[^}]*\})?\s+([0-9.eE+-]+)\s*$", re.M)


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def current_period(now: datetime) -> str:
    """The billing period key of the usage counters: the calendar month (UTC), ``YYYY-MM``."""
    return now.astimezone(UTC).strftime("%Y-%m")


def outbox_status(settings: Settings, now: datetime) -> OutboxStatus:
    table = settings.events_table
    oldest = status_dal.oldest_pending(table, settings.idempotency_table)
    pending = status_dal.count_pending(table, settings.idempotency_table)
    gaps = [
        RecoveryWindow(
            shard=w.shard,
            accepted_from=w.lo,
            accepted_to=w.hi,
            opened_at=w.opened_at,
            scanned=w.scanned,
            recovered=w.recovered,
        )
        for w in status_dal.recovery_windows(table, settings.idempotency_table)
    ]
    if oldest is None or not oldest.get("accepted_at"):
        return OutboxStatus(pending=pending, recovery=gaps)
    at = str(oldest["accepted_at"])
    age = max(0.0, (now - _parse_time(at)).total_seconds())
    return OutboxStatus(
        pending=pending,
        oldest_pending_at=at,
        oldest_pending_age_s=round(age, 1),
        oldest_pending_tenant=oldest.get("tenant_id"),
        recovery=gaps,
    )


def outbox_gauges(settings: Settings | None = None, now: datetime | None = None) -> OutboxGauges:
    """The backlog gauges the flush emits; 0 s when nothing is pending."""
    settings = settings or get_settings()
    now = now or datetime.now(UTC)
    oldest = status_dal.oldest_pending(settings.events_table, settings.idempotency_table)
    age = 0.0
    if oldest is not None and oldest.get("accepted_at"):
        age = max(0.0, (now - _parse_time(str(oldest["accepted_at"]))).total_seconds())
    return OutboxGauges(
        oldest_pending_age_s=round(age, 1),
        dead_letters=status_dal.count_dead_letters(
            settings.events_table, settings.idempotency_table
        ),
    )


def record_flush(
    result: FlushResult,
    *,
    openmeter_breaker: int | None = None,
    settings: Settings | None = None,
    now: datetime | None = None,
) -> None:
    """Store a flush run's result (a ``FlushResult``) as the last one (``meterbridge status``)."""
    settings = settings or get_settings()
    record: dict[str, Any] = {
        **result.model_dump(),
        "finished_at": rfc3339(now or datetime.now(UTC)),
    }
    if openmeter_breaker is not None:
        record["openmeter_breaker"] = BREAKER_NAMES.get(int(openmeter_breaker), "unknown")
    status_dal.put_last_flush(settings.idempotency_table, record)


def last_flush(settings: Settings, now: datetime) -> LastFlush | None:
    raw = status_dal.get_last_flush(settings.idempotency_table)
    if raw is None:
        return None
    flush = LastFlush.model_validate(raw)
    flush.age_s = round(max(0.0, (now - _parse_time(flush.finished_at)).total_seconds()), 1)
    return flush


def top_tenants(settings: Settings, period: str, top: int) -> list[TenantUsage]:
    totals = status_dal.usage_totals(settings.usage_table, period)
    rows = [TenantUsage(tenant_id=t, meter=m, used=used) for (t, m), used in totals.items()]
    rows.sort(key=lambda r: (-r.used, r.tenant_id, r.meter))
    return rows[:top]


def nats_breaker_from_metrics(text: str) -> str | None:
    """The NATS breaker state in a Prometheus exposition (the worst of the samples)."""
    values = [int(float(v)) for v in _NATS_STATE.findall(text)]
    if not values:
        return None
    # Open (1) is worse than half-open (2), which is worse than closed (0).
    worst = 1 if 1 in values else max(values)
    return BREAKER_NAMES.get(worst, "unknown")


def fetch_nats_breaker(
    streaming_url: str, *, timeout_s: float = 5.0
) -> tuple[str | None, str | None]:
    """(state, error) from ``<streaming_url>/metrics``; a failure is reported, not raised."""

    try:
        resp = httpx.get(streaming_url.rstrip("/") + "/metrics", timeout=timeout_s)
        resp.raise_for_status()
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    state = nats_breaker_from_metrics(resp.text)
    return state, None if state else "no meterbridge_nats_circuit_state in /metrics"


def collect_status(
    *,
    settings: Settings | None = None,
    now: datetime | None = None,
    top: int = 10,
    streaming_url: str | None = None,
    fetch_nats: Callable[[str], tuple[str | None, str | None]] = fetch_nats_breaker,
) -> Status:
    settings = settings or get_settings()
    now = now or datetime.now(UTC)
    period = current_period(now)
    flush = last_flush(settings, now)
    breakers = Breakers(openmeter=flush.openmeter_breaker if flush else None)
    if streaming_url:
        breakers.nats, breakers.nats_error = fetch_nats(streaming_url)
    return Status(
        checked_at=rfc3339(now),
        period=period,
        outbox=outbox_status(settings, now),
        dead_letters=status_dal.count_dead_letters(
            settings.events_table, settings.idempotency_table
        ),
        last_flush=flush,
        breakers=breakers,
        top_tenants=top_tenants(settings, period, top),
    )
