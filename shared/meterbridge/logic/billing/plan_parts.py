"""Plan changes mid-period: each part of the period priced with the plan in force
(docs/billing.md#plan-changes).

A plan change records, on the tenant's profile (``plan_changes``), its instant, the plans
before and after, and a snapshot of the period's additive meters (COUNT, SUM) at that instant.
The period then splits into parts at those instants. A part's usage is the difference of the
snapshots around it; its included units are its plan's limit times the part's share of the
period (seconds, rounded half up to whole units), and it is priced by its plan's rule (tier
bounds scaled the same way). The meter's charge is the sum over parts, rounded half up once.
Meters that do not add up over time (MAX, UNIQUE_COUNT, LATEST) are priced for the whole
period with the plan in force at its end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from meterbridge.dal import usage as usage_dal
from meterbridge.logic.periods import bounds, period_of
from meterbridge.models.billing import Part, PartCharge
from meterbridge.plans import Overage, Plan, Tier, Tiers, catalog
from meterbridge.settings import Settings

ADDITIVE = frozenset({"COUNT", "SUM"})
# Changes older than this many periods before the newest can no longer be billed (35-day window).
KEEP_PERIODS = 3


def change_record(
    tenant_id: str, from_plan: str, to_plan: str, settings: Settings, now: datetime | None = None
) -> dict[str, Any]:
    """What a plan change records: its instant and the additive meters' totals at it."""

    now = now or datetime.now(UTC)
    period = period_of(now)
    used: dict[str, str] = {}
    for name, spec in catalog().meters.items():
        if spec.aggregation in ADDITIVE:
            state = usage_dal.meter_state(
                settings.usage_table, tenant_id, period, name, spec.aggregation
            )
            used[name] = str(state.total.value or 0)
    return {
        "at": int(now.timestamp()),
        "period": period,
        "from": from_plan,
        "to": to_plan,
        "used": used,
    }


def with_change(existing: Sequence[Mapping[str, Any]], record: dict[str, Any]) -> list[Any]:
    """The profile's ``plan_changes`` after ``record``: the ones still billable, then it."""
    start, _ = bounds(str(record["period"]))
    year, month = start.year, start.month - (KEEP_PERIODS - 1)
    while month < 1:
        year, month = year - 1, month + 12
    oldest = f"{year:04d}-{month:02d}"
    return [dict(c) for c in existing if str(c.get("period", "")) >= oldest] + [record]


def _plan(plan_id: Any, fallback: Plan) -> Plan:
    return catalog().plans.get(str(plan_id)) or fallback


def parts(period: str, changes: Sequence[Mapping[str, Any]], plan: Plan) -> list[Part] | None:
    """The parts of ``period`` by plan, or None when its plan did not change in it."""
    inside = sorted((c for c in changes if c.get("period") == period), key=lambda c: int(c["at"]))
    if not inside:
        return None
    start, end = bounds(period)
    total = Decimal(int((end - start).total_seconds()))
    cuts = [start] + [datetime.fromtimestamp(int(c["at"]), UTC) for c in inside] + [end]
    plans = [_plan(inside[0]["from"], plan)] + [_plan(c["to"], plan) for c in inside]
    snaps: list[Mapping[str, Any] | None] = [{}] + [c.get("used") or {} for c in inside] + [None]
    return [
        Part(
            plan=plans[i],
            start=cuts[i],
            end=cuts[i + 1],
            share=Decimal(int((cuts[i + 1] - cuts[i]).total_seconds())) / total,
            before=snaps[i] or {},
            after=snaps[i + 1],
        )
        for i in range(len(plans))
    ]


def _whole(value: Decimal) -> Decimal:
    return value.quantize(Decimal(1), rounding=ROUND_HALF_UP)


def price_parts(
    meter: str, hard_capped: Any, used_total: Decimal, periods: Sequence[Part]
) -> list[PartCharge]:
    """Each part's usage of ``meter``, its prorated limit, overage and (unrounded) charge."""
    charges = []
    for part in periods:
        low = Decimal(str(part.before.get(meter, 0)))
        high = used_total if part.after is None else Decimal(str(part.after.get(meter, 0)))
        used = max(Decimal(0), high - low)
        full = part.plan.limit(meter)
        limit = None if full is None else _whole(Decimal(full) * part.share)
        hard = hard_capped(part.plan, meter)
        rule = part.plan.overage.get(meter)
        cents = Decimal(0)
        if rule is not None and not hard:
            if isinstance(rule, Tiers):
                # Scaled bounds may round onto each other: skip the ascending check.
                rule = Tiers.model_construct(
                    tiers=tuple(
                        Tier.model_construct(
                            up_to=None if t.up_to is None else _whole(t.up_to * part.share),
                            unit_price_cents=t.unit_price_cents,
                        )
                        for t in rule.tiers
                    )
                )
            assert isinstance(rule, (Overage, Tiers))
            cents = rule.cents(used, limit)
        over = max(Decimal(0), used - limit) if limit is not None and not hard else Decimal(0)
        charges.append(PartCharge(part.plan, part.start, part.end, used, limit, over, cents))
    return charges
