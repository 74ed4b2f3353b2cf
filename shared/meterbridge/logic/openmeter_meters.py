"""The catalogue's meters as OpenMeter meters (docs/meters.md), and their sync.

OpenMeter's meter reads one event type. A catalogue meter reading one type is one OpenMeter
meter whose slug is the meter's key; one reading several types is one OpenMeter meter per
type, slugs ``<key>_1``, ``<key>_2``… in the order of ``types`` (history adds them up, so
only COUNT, SUM, MAX and MIN meters may read several types and keep exact history). The
catch-all ``events`` meter reads "every type no meter lists", which no OpenMeter meter can
express: it has no OpenMeter meter, and no history. Every OpenMeter meter groups by the
catalogue's ``group_by`` plus ``subject`` (the tenant's own subject, ``$.meterbridge_subject``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from meterbridge.plans import CATCH_ALL, SUBJECT_DIMENSION, SUBJECT_KEY, Catalog, Meter

UPDATABLE = ("description", "groupBy")
MERGEABLE = ("COUNT", "SUM", "MAX", "MIN")


def slugs(name: str, meter: Meter) -> list[tuple[str, str]]:
    """(OpenMeter slug, event type) for each type the meter reads."""
    if name == CATCH_ALL:
        return []
    if len(meter.types) == 1:
        return [(name, meter.types[0])]
    return [(f"{name}_{i}", t) for i, t in enumerate(meter.types, start=1)]


def desired(cat: Catalog) -> dict[str, dict[str, Any]]:
    """The OpenMeter meters the catalogue needs, by slug (MeterCreate bodies)."""
    out: dict[str, dict[str, Any]] = {}
    for name, meter in cat.meters.items():
        for slug, event_type in slugs(name, meter):
            body: dict[str, Any] = {
                "slug": slug,
                "name": slug,
                "description": meter.description,
                "eventType": event_type,
                "aggregation": meter.aggregation,
                "groupBy": {**meter.group_by, SUBJECT_DIMENSION: f"$.{SUBJECT_KEY}"},
            }
            if meter.value_property is not None:
                body["valueProperty"] = meter.value_property
            out[slug] = body
    return out


@dataclass
class SyncPlan:
    create: list[dict[str, Any]] = field(default_factory=list)
    update: list[tuple[str, dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    conflicts: list[tuple[str, str]] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"+ {b['slug']}: {b['aggregation']} of {b['eventType']}" for b in self.create]
        for slug, old, new in self.update:
            for key in UPDATABLE:
                if old.get(key) != new.get(key):
                    out.append(f"~ {slug}.{key}: {old.get(key)!r} -> {new.get(key)!r}")
        out += [f"! {slug}: {why}" for slug, why in self.conflicts]
        out += [f"= {slug}" for slug in self.unchanged]
        return out


def plan_sync(cat: Catalog, existing: list[dict[str, Any]]) -> SyncPlan:
    """What to create and update so OpenMeter holds the catalogue's meters. Fields OpenMeter
    cannot update (event type, aggregation, value) are reported as conflicts, never changed:
    deleting a meter deletes its history, an operator's decision."""
    by_slug = {m.get("slug"): m for m in existing}
    plan = SyncPlan()
    for slug, body in desired(cat).items():
        current = by_slug.get(slug)
        if current is None:
            plan.create.append(body)
            continue
        fixed = [
            k
            for k in ("eventType", "aggregation", "valueProperty")
            if current.get(k) != body.get(k)
        ]
        if fixed:
            plan.conflicts.append((slug, f"differs in {', '.join(fixed)} (not updatable)"))
        elif any(current.get(k) != body.get(k) for k in UPDATABLE):
            plan.update.append((slug, current, {k: body[k] for k in UPDATABLE}))
        else:
            plan.unchanged.append(slug)
    return plan


def sync(cat: Catalog, api: Any, *, dry_run: bool = False) -> SyncPlan:
    plan = plan_sync(cat, api.list_meters())
    if not dry_run:
        for body in plan.create:
            api.create_meter(body)
        for slug, _, change in plan.update:
            api.update_meter(slug, change)
    return plan
