"""The usage summary: per meter used, limit, remaining, overage, and the estimated charge."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from meterbridge.dal import usage as usage_dal
from meterbridge.logic.billing import plan_parts
from meterbridge.logic.periods import bounds
from meterbridge.models.usage import GroupUsage, MeterUsage, PartUsage, PeriodUsage
from meterbridge.plans import Plan, as_number, catalog, round_cents
from meterbridge.settings import Settings


def period_usage(
    tenant_id: str,
    plan: Plan,
    period: str,
    settings: Settings,
    group_by: Sequence[str] = (),
    *,
    changes: Sequence[Mapping[str, Any]] = (),
) -> PeriodUsage:

    cat = catalog()
    meters = []
    overage_total = 0
    # A plan change in this period splits it (docs/billing.md#plan-changes).
    split = plan_parts.parts(period, changes, plan) if changes else None
    for name, spec in cat.meters.items():
        state = usage_dal.meter_state(
            settings.usage_table, tenant_id, period, name, spec.aggregation
        )
        used = state.total.value or Decimal(0)
        priced: list[PartUsage] | None = None
        if split and spec.aggregation in plan_parts.ADDITIVE:
            charges = plan_parts.price_parts(name, cat.hard_capped, used, split)
            limits = [c.limit for c in charges]
            known = [x for x in limits if x is not None]
            limit = sum(known, Decimal(0)) if len(known) == len(limits) else None
            hard = False
            overage = sum((c.overage for c in charges), Decimal(0))
            charge = round_cents(sum((c.cents for c in charges), Decimal(0)))
            priced = [
                PartUsage(
                    plan=c.plan.id,
                    start=c.start,
                    end=c.end,
                    used=as_number(c.used),
                    limit=None if c.limit is None else as_number(c.limit),
                    overage=as_number(c.overage),
                )
                for c in charges
            ]
        else:
            # Non-additive meters, or no change: the plan in force at the period's end.
            in_force = split[-1].plan if split else plan
            limit = in_force.limit(name)
            hard = cat.hard_capped(in_force, name)
            overage = (
                max(Decimal(0), used - limit) if limit is not None and not hard else Decimal(0)
            )
            charge = in_force.overage_cents(name, used)
        overage_total += charge
        meters.append(
            MeterUsage(
                meter=name,
                aggregation=spec.aggregation,
                unit=spec.unit,
                used=as_number(used),
                limit=None if limit is None else as_number(limit),
                remaining=None if limit is None else as_number(max(Decimal(0), limit - used)),
                overage=as_number(overage),
                overage_charge_cents=charge,
                dimensions=list(spec.group_by),
                groups=_groups(spec.aggregation, spec.group_by, state, group_by),
                parts=priced,
            )
        )
    start, end = bounds(period)
    estimate = None if plan.base_price_cents is None else plan.base_price_cents + overage_total
    return PeriodUsage(
        period=period,
        start=start,
        end=end,
        plan=plan.id,
        hard_limit=plan.hard_limit,
        base_price_cents=plan.base_price_cents,
        meters=meters,
        estimated_charge_cents=estimate,
    )


def _groups(
    aggregation: str,
    dims: Mapping[str, str],
    state: usage_dal.MeterState,
    asked: Sequence[str],
) -> list[GroupUsage] | None:
    """The meter's groups by the ``asked`` dimensions, merged from its stored groups; None
    when the meter lacks one of them. UNIQUE_COUNT merges only by all its dimensions (values
    seen in two groups would count twice), so a subset of them lists no groups."""
    if not asked or any(d not in dims for d in asked):
        return None
    if aggregation == "UNIQUE_COUNT" and set(asked) != set(dims):
        return None
    merged: dict[tuple[str | None, ...], usage_dal.CellValue] = {}
    for group, cell in state.groups.values():
        if cell.value is None:
            continue
        key = tuple(group.get(d) for d in asked)
        into = merged.setdefault(key, usage_dal.CellValue())
        usage_dal.merge_cell(into, cell, aggregation)
    rows = [
        GroupUsage(group_by=dict(zip(asked, key, strict=True)), used=as_number(cell.value))
        for key, cell in merged.items()
        if cell.value is not None
    ]
    return sorted(rows, key=lambda g: (-g.used, json.dumps(g.group_by, sort_keys=True)))
