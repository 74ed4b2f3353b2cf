"""Usage ingest: validate a whole batch, store and count each new event exactly once.

Order of work for one request (docs/usage.md):
1. parse and validate every event (nothing is stored if one is invalid);
2. drop repeats inside the batch;
3. store the events in the outbox and move the quota counters in the same transactions,
   each put conditional on the id being new: an id stored before (by a retry or a concurrent
   request) cancels its transaction with a reason naming it, and becomes a duplicate;
4. emit threshold alerts (once per period, meter and threshold);
5. publish to NATS, best effort; what NATS did not acknowledge is marked for the flush's
   republish (no write on the happy path).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from meterbridge.dal.outbox.repository import DynamoOutbox
from meterbridge.dal.usage import UsageCounters
from meterbridge.errors import QuotaExceeded
from meterbridge.logic import meters
from meterbridge.logic.ingest import quota, thresholds
from meterbridge.logic.ingest.parse import MAX_AGE, event_time, validate
from meterbridge.logic.periods import period_of, seconds_until_end
from meterbridge.models.cloudevent import CloudEvent
from meterbridge.models.usage import IngestResult
from meterbridge.observability import metrics
from meterbridge.plans import catalog
from meterbridge.settings import Settings, get_settings
from meterbridge.timestamps import rfc3339


def ingest(
    tenant_id: str,
    plan_id: str,
    raw_events: list[Any],
    *,
    settings: Settings | None = None,
    now: datetime | None = None,
    max_age: timedelta | None = MAX_AGE,
    backfill: bool = False,
) -> tuple[IngestResult, list[CloudEvent], list[CloudEvent]]:
    """Store and count a validated batch.

    Returns the answer, the events newly stored and the threshold alerts it raised (both to be
    published with ``publish``). Live events count in the period they arrive in (quotas are
    about what a tenant sends now); a ``backfill`` counts each event in its own event-time
    period, with no hard-limit refusal and no alerts (docs/flush.md).
    """
    settings = settings or get_settings()
    now = now or datetime.now(UTC)
    plan = catalog().plan(plan_id)
    batch = validate(tenant_id, raw_events, now=now, max_age=max_age)
    period = period_of(now)
    # No read first: each outbox put is conditional, so a stored id cancels its transaction
    # with a reason naming it, which costs nothing for new events (the request budget).
    duplicates = batch.repeats
    accepted_at = rfc3339(now)
    store = DynamoOutbox(settings.events_table)
    usage = UsageCounters(settings.usage_table)
    new = quota.Pending()
    for event, event_feeds in zip(batch.events, batch.feeds, strict=True):
        new.items.append(
            store.record(event, tenant_id=tenant_id, kind="usage", accepted_at=accepted_at)
        )
        counted_in = period_of(event_time(event)) if backfill else period
        new.fed.append([meters.Fed(counted_in, feed, event.time, event.id) for feed in event_feeds])
        new.events.append(event)
    written, more_duplicates, refused = quota.store(
        tenant_id, plan, period, new, now, outbox_=store, usage=usage
    )
    duplicates += more_duplicates
    result = IngestResult(accepted=len(written), duplicates=duplicates)
    metrics.add_metric(name="EventsAccepted", unit="Count", value=result.accepted)
    if result.duplicates:  # most requests have none: no data point rather than a zero
        metrics.add_metric(name="EventsDuplicate", unit="Count", value=result.duplicates)
    alerts: list[CloudEvent] = []
    if written and not backfill:
        alerts = thresholds.reached(
            tenant_id, plan, period, thresholds.added(written), now, outbox=store, usage=usage
        )
    if refused:
        metrics.add_metric(name="QuotaRejections", unit="Count", value=1)
        metrics.add_metric(name="EventsRejected", unit="Count", value=refused)
        raise QuotaExceeded(
            f"the {plan.name} plan's monthly quota is used up; it resets when the period ends",
            details={
                "accepted": result.accepted,
                "duplicates": result.duplicates,
                "refused": refused,
                "period": period,
            },
            headers={"Retry-After": str(seconds_until_end(period, now))},
        )
    return result, [e for _, e in written], alerts
