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

import json
import math
import random
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from meterbridge.bus.publisher import Message, get_publisher
from meterbridge.bus.subjects import nats_msg_id, tenant_subject
from meterbridge.dal import events as events_dal
from meterbridge.dal import outbox
from meterbridge.dal.outbox.repository import DynamoOutbox, IngestOutbox
from meterbridge.dal.usage import UsageCounters, UsageStore
from meterbridge.errors import (
    PayloadTooLarge,
    QuotaExceeded,
    StorageUnavailable,
    ValidationFailed,
)
from meterbridge.logic import meters, rate
from meterbridge.logic.periods import period_of, seconds_until_end
from meterbridge.models.cloudevent import (
    ALERTS_SOURCE,
    CloudEvent,
    is_reserved_type,
    now_rfc3339,
    stable_id,
    usage_source,
)
from meterbridge.models.outbox import Record
from meterbridge.models.usage import InboundEvent, IngestResult
from meterbridge.observability import logger, metrics
from meterbridge.plans import Plan, as_number, catalog
from meterbridge.settings import Settings, get_settings
from meterbridge.timestamps import rfc3339

MAX_BODY_BYTES = 1_000_000
MAX_EVENTS = 1_000
MAX_EVENT_BYTES = 64 * 1024
MAX_AGE = timedelta(days=35)
MAX_AHEAD = timedelta(minutes=5)
THRESHOLDS = (80, 100)
COUNTER_TTL_S = 400 * 86400


@dataclass
class Batch:
    """A validated batch: CloudEvents in request order, with what each feeds (its meters'
    values, logic/meters.py)."""

    events: list[CloudEvent]
    feeds: list[list[meters.Feed]]
    repeats: int = 0


@dataclass
class _Pending:
    """Events to store, each with the meter cells it moves (``meters.Fed``)."""

    items: list[Record] = field(default_factory=list)
    fed: list[list[meters.Fed]] = field(default_factory=list)
    events: list[CloudEvent] = field(default_factory=list)


def _non_finite(name: str) -> float:
    # NaN/Infinity are not JSON: parsed as floats here so validate() names where they are.
    return float(name)


# The largest magnitude a float64 holds: OpenMeter (Go) refuses any number past it.
_FLOAT64_MAX = sys.float_info.max
# Only a run of 309+ digits can be an integer past float64's range (about 1.8e308).
_LONG_DIGITS_MIN = 309
_LONG_DIGITS = re.compile(r"\d{309}")


def _bad_number(value: Any) -> list[str] | None:
    """The path of the first number a strict JSON parser (Go's) would refuse, or None.

    Non-finite floats (``NaN``, ``Infinity``, ``1e400`` parsed as ``inf``) and integers past the
    float64 range. Iterative, so any nesting the parser accepted is walked without recursion.
    """
    stack: list[tuple[Any, list[str]]] = [(value, [])]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            stack.extend((v, [*path, str(k)]) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, [*path, str(i)]) for i, v in enumerate(node))
        elif isinstance(node, float):
            if not math.isfinite(node):
                return path
        elif isinstance(node, int) and not isinstance(node, bool) and abs(node) > _FLOAT64_MAX:
            return path
    return None


def parse_body(raw: bytes) -> list[Any]:
    """The request body as a list of JSON objects (one event or an array)."""
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge(
            f"the request body is over {MAX_BODY_BYTES} bytes",
            details={"limit_bytes": MAX_BODY_BYTES},
        )
    try:
        body = json.loads(raw, parse_constant=_non_finite)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationFailed("the body is not valid JSON", details={"error": str(exc)}) from None
    except RecursionError:
        raise ValidationFailed("the body is nested too deeply") from None
    # Lone surrogates parse (from a backslash-u escape, or from UTF-8 bytes, which json decodes
    # with surrogatepass) but cannot be stored or sent as UTF-8. A UTF-8 body with neither an
    # escape nor an 0xED byte cannot hold one; NUL bytes mean UTF-16/32, always checked.
    if b"\\u" in raw or b"\xed" in raw or b"\x00" in raw:
        try:
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationFailed("the body holds text that is not valid Unicode") from None
    events = body if isinstance(body, list) else [body]
    if not events:
        raise ValidationFailed("the batch is empty")
    if len(events) > MAX_EVENTS:
        raise PayloadTooLarge(
            f"a batch holds at most {MAX_EVENTS} events",
            details={"limit_events": MAX_EVENTS, "events": len(events)},
        )
    return events


def validate(
    tenant_id: str, raw_events: list[Any], *, now: datetime, max_age: timedelta | None = MAX_AGE
) -> Batch:
    """Every event checked before anything is stored; one bad event fails the whole batch."""
    problems: list[dict[str, Any]] = []
    too_large: list[int] = []
    parsed: list[tuple[int, InboundEvent]] = []
    for index, raw in enumerate(raw_events):
        if not isinstance(raw, dict):
            problems.append(
                {"index": index, "errors": [{"loc": [], "message": "not a JSON object"}]}
            )
            continue
        text = json.dumps(raw, separators=(",", ":"))
        if len(text.encode()) > MAX_EVENT_BYTES:
            too_large.append(index)
            continue
        # A cheap screen on the text already made; the walk runs only when it may find one.
        if (
            "NaN" in text
            or "Infinity" in text
            or (len(text) > _LONG_DIGITS_MIN and _LONG_DIGITS.search(text))
        ):
            bad = _bad_number(raw)
            if bad is not None:
                problems.append(
                    {
                        "index": index,
                        "errors": [
                            {
                                "loc": bad,
                                "message": "numbers must be finite and within the float64 "
                                "range (OpenMeter refuses NaN, Infinity and overflows)",
                            }
                        ],
                    }
                )
                continue
        try:
            event = InboundEvent.model_validate(raw)
        except ValidationError as exc:
            problems.append(
                {
                    "index": index,
                    "errors": [
                        {"loc": [str(p) for p in e["loc"]], "message": e["msg"]}
                        for e in exc.errors()
                    ],
                }
            )
            continue
        if is_reserved_type(event.type):
            problems.append(
                {
                    "index": index,
                    "errors": [
                        {
                            "loc": ["type"],
                            "message": f"{event.type!r} is a type meterbridge emits "
                            "(billing and lifecycle events); it cannot be sent as usage",
                        }
                    ],
                }
            )
            continue
        if event.time is not None:
            if max_age is not None and event.time < now - max_age:
                problems.append(
                    {
                        "index": index,
                        "errors": [
                            {
                                "loc": ["time"],
                                "message": f"older than {max_age.days} days (late-event policy)",
                            }
                        ],
                    }
                )
                continue
            if event.time > now + MAX_AHEAD:
                problems.append(
                    {
                        "index": index,
                        "errors": [
                            {"loc": ["time"], "message": "more than 5 minutes in the future"}
                        ],
                    }
                )
                continue
        parsed.append((index, event))
    if too_large:
        raise PayloadTooLarge(
            f"an event is over {MAX_EVENT_BYTES} bytes",
            details={"limit_bytes_per_event": MAX_EVENT_BYTES, "indexes": too_large},
        )
    if problems:
        raise ValidationFailed(
            f"{len(problems)} of {len(raw_events)} events are invalid; nothing was stored",
            details=problems,
        )
    source = usage_source(tenant_id)
    cat = catalog()
    fed = meters.resolve_batch(cat, parsed, len(raw_events))
    seen: set[str] = set()
    batch = Batch(events=[], feeds=[])
    for (_, event), event_feeds in zip(parsed, fed, strict=True):
        if event.id in seen:
            batch.repeats += 1
            continue
        seen.add(event.id)
        moment = event.time or now
        # OpenMeter's subject is the tenant (the customer it bills); the tenant's own subject
        # travels in data as the ``subject`` dimension (docs/meters.md).
        batch.events.append(
            CloudEvent(
                id=event.id,
                source=source,
                type=event.type,
                subject=tenant_id,
                time=rfc3339(moment.astimezone(UTC)),
                data=meters.with_subject(event.data, event.subject),
                dataschema=event.dataschema,
            )
        )
        batch.feeds.append(event_feeds)
    return batch


def _event_time(event: CloudEvent) -> datetime:
    return datetime.fromisoformat(event.time.replace("Z", "+00:00"))


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


def check_rate(tenant_id: str, plan: Plan, settings: Settings, now: datetime) -> None:
    """The tenant's ingest budget across processes (logic/rate.py; ``require_tenant`` has
    already taken from the tenant's in-process bucket)."""
    rate.take_shared(tenant_id, plan, settings, now)


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
    new = _Pending()
    for event, event_feeds in zip(batch.events, batch.feeds, strict=True):
        new.items.append(
            store.record(event, tenant_id=tenant_id, kind="usage", accepted_at=accepted_at)
        )
        counted_in = period_of(_event_time(event)) if backfill else period
        new.fed.append([meters.Fed(counted_in, feed, event.time, event.id) for feed in event_feeds])
        new.events.append(event)
    written, more_duplicates, refused = _store(
        tenant_id, plan, period, new, now, store=store, usage=usage
    )
    duplicates += more_duplicates
    result = IngestResult(accepted=len(written), duplicates=duplicates)
    metrics.add_metric(name="EventsAccepted", unit="Count", value=result.accepted)
    if result.duplicates:  # most requests have none: no data point rather than a zero
        metrics.add_metric(name="EventsDuplicate", unit="Count", value=result.duplicates)
    alerts: list[CloudEvent] = []
    if written and not backfill:
        alerts = _thresholds(
            tenant_id, plan, period, _added(written), now, store=store, usage=usage
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


def _chunks(pending: _Pending) -> list[_Pending]:
    """Groups of events that fit one transaction with their cell writes (<= 100 items) and
    DynamoDB's 4 MB request (<= ``SEGMENT_MAX_BYTES`` of events)."""
    chunks: list[_Pending] = []
    current = _Pending()
    budget = meters.OpsBudget()
    size = 0
    for item, fed, event in zip(pending.items, pending.fed, pending.events, strict=True):
        grown = size + item.size
        if current.items and (
            len(current.items) + 1 + budget.with_(fed) > events_dal.TRANSACT_MAX
            or grown > outbox.SEGMENT_MAX_BYTES
        ):
            chunks.append(current)
            current = _Pending()
            budget = meters.OpsBudget()
            grown = item.size
        size = grown
        budget.add(fed)
        current.items.append(item)
        current.fed.append(fed)
        current.events.append(event)
    if current.items:
        chunks.append(current)
    return chunks


Written = list[tuple[list[meters.Fed], CloudEvent]]
_ADDITIVE = ("COUNT", "SUM", "UNIQUE_COUNT")


def _store(
    tenant_id: str,
    plan: Plan,
    period: str,
    pending: _Pending,
    now: datetime,
    *,
    store: IngestOutbox,
    usage: UsageStore,
) -> tuple[Written, int, int]:
    """Write chunks; returns (feeds, event) stored, late duplicates, and events refused by
    quota.

    A cancelled transaction names its reasons: events stored meanwhile (by an earlier or a
    concurrent request) leave the chunk as duplicates; a MAX/MIN/LATEST cell already as good
    or a UNIQUE_COUNT value already seen leaves out that write; a hard-limit counter that
    refuses the amount shrinks the chunk to the room left, in request order, and ends the
    batch there.
    """
    cat = catalog()
    expires = int(now.timestamp()) + COUNTER_TTL_S
    written: Written = []
    duplicates = refused = 0
    chunks = _chunks(pending)
    for position, first_try in enumerate(chunks):
        chunk, full = first_try, False
        state = meters.CellState()
        for _ in range(40):  # each round removes duplicates, drops settled writes or shrinks
            if not chunk.items:
                break
            fed = [f for fs in chunk.fed for f in fs]
            ops = meters.cell_ops(tenant_id, cat, plan, period, fed, state, usage.table, expires)
            outcome = store.accept(chunk.items, ops)
            if outcome.written:
                meters.remember_markers(tenant_id, usage.table, meters.written_marks(ops))
                written.extend(zip(chunk.fed, chunk.events, strict=True))
                break
            meters.learn(state, ops, outcome.dropped)
            if outcome.dropped:
                meters.remember_markers(
                    tenant_id,
                    usage.table,
                    [ops[i].tag for i in outcome.dropped if ops[i].kind == "mark"],
                )
            if outcome.duplicates:
                keep = [i for i in range(len(chunk.items)) if i not in outcome.duplicates]
                duplicates += len(chunk.items) - len(keep)
                chunk = _select(chunk, keep)
            elif outcome.over_cap:
                keep = meters.within_room(tenant_id, cat, plan, period, chunk.fed, usage)
                refused += len(chunk.items) - len(keep)
                full = full or len(keep) < len(chunk.items)
                chunk = _select(chunk, keep)
            elif outcome.conflict and not outcome.dropped:
                time.sleep(random.uniform(0.005, 0.05))  # let the other transaction finish
        else:
            raise StorageUnavailable(
                "too much contention on these events; retry the request",
                headers={"Retry-After": "1"},
            )
        if full:
            refused += sum(len(c.items) for c in chunks[position + 1 :])
            break
    return written, duplicates, refused


def _select(chunk: _Pending, keep: list[int]) -> _Pending:
    return _Pending(
        items=[chunk.items[i] for i in keep],
        fed=[chunk.fed[i] for i in keep],
        events=[chunk.events[i] for i in keep],
    )


def _added(written: Written) -> dict[str, Decimal | None]:
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


def _thresholds(
    tenant_id: str,
    plan: Plan,
    period: str,
    added: dict[str, Decimal | None],
    now: datetime,
    *,
    store: IngestOutbox,
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
            store.enqueue(alert, tenant_id=tenant_id, kind="usage")
            logger.info("usage threshold reached", extra={"meter": meter, "threshold": pct})
            metrics.add_metric(name="ThresholdAlerts", unit="Count", value=1)
            alerts.append(alert)
    return alerts


async def publish(
    tenant_id: str,
    events: list[CloudEvent],
    alerts: list[CloudEvent],
    settings: Settings | None = None,
) -> None:
    """Publish stored events and alerts to the tenant's subject, best effort.

    What JetStream acknowledged costs no write; the rest is marked for the flush (the
    ``republish`` index), which republishes it with the same ``Nats-Msg-Id``.
    """
    import asyncio

    settings = settings or get_settings()
    everything = events + alerts
    if not everything or not settings.nats_enabled:
        return
    messages = [
        Message(tenant_subject(tenant_id, "usage"), nats_msg_id(e.source, e.id), e.wire())
        for e in everything
    ]
    started = time.perf_counter()
    acked = await get_publisher().publish(messages)
    missed = [e for e in everything if nats_msg_id(e.source, e.id) not in acked]
    if missed:
        logger.warning("events left for republish", extra={"count": len(missed)})
        store = DynamoOutbox(settings.events_table)
        try:
            await asyncio.to_thread(store.mark_unpublished, missed, accepted_at=now_rfc3339())
        except StorageUnavailable as exc:
            # The live stream is best effort; the flush still republishes recent records
            # from the table's stream (docs/flush.md).
            logger.warning("republish markers not written", extra={"error": exc.message})
    metrics.add_metric(
        name="NatsPublishMs", unit="Milliseconds", value=(time.perf_counter() - started) * 1000
    )
