"""Usage history from OpenMeter's query API, the calling tenant forced (docs/meters.md).

The OpenMeter subject of every usage event is the tenant, so the query always carries
``subject=<tenant>`` from the key, whatever the request says; the tenant's own subject is the
``subject`` dimension. A meter reading several types is the sum (or max, min) of its OpenMeter
meters' rows (logic/openmeter_meters.py).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from meterbridge.errors import MeterbridgeError, ValidationFailed
from meterbridge.logic import openmeter_meters
from meterbridge.plans import CATCH_ALL, SUBJECT_DIMENSION, as_number, catalog
from meterbridge.runtime.lazy import LazyLoader
from meterbridge.settings import Settings, get_settings
from meterbridge.timestamps import rfc3339

if TYPE_CHECKING:  # pragma: no cover
    from meterbridge.adapters import openmeter_api
else:
    openmeter_api = LazyLoader("openmeter_api", globals(), "meterbridge.adapters.openmeter_api")

WINDOWS = ("MINUTE", "HOUR", "DAY", "MONTH")
MAX_SPAN_DAYS = {"MINUTE": 2, "HOUR": 93, "DAY": 400, "MONTH": 800}


class HistoryUnavailable(MeterbridgeError):
    """OpenMeter is disabled or cannot be reached: history has no other source."""

    status, code = 503, "history_unavailable"


def query(
    tenant_id: str,
    meter: str,
    start: datetime,
    end: datetime,
    window_size: str,
    group_by: tuple[str, ...] = (),
    settings: Settings | None = None,
    api: Any = None,
) -> dict[str, Any]:
    settings = settings or get_settings()
    cat = catalog()
    spec = cat.meters.get(meter)
    if spec is None:
        raise ValidationFailed(f"unknown meter {meter!r}", details={"meters": sorted(cat.meters)})
    if meter == CATCH_ALL:
        raise ValidationFailed(
            "the catch-all events meter has no history (no OpenMeter meter can read every "
            "unlisted type); GET /v1/usage has its period totals"
        )
    if window_size not in WINDOWS:
        raise ValidationFailed("window_size must be MINUTE, HOUR, DAY or MONTH")
    if start.tzinfo is None or end.tzinfo is None or start >= end:
        raise ValidationFailed("from and to are RFC 3339 times with a zone, from before to")
    if (end - start).days > MAX_SPAN_DAYS[window_size]:
        raise ValidationFailed(
            f"at most {MAX_SPAN_DAYS[window_size]} days per query with window_size={window_size}"
        )
    dims = (*spec.group_by, SUBJECT_DIMENSION)
    unknown = [d for d in group_by if d not in dims]
    if unknown:
        raise ValidationFailed(
            f"meter {meter!r} has no dimension {unknown[0]!r}", details={"dimensions": dims}
        )
    slugs = openmeter_meters.slugs(meter, spec)
    if len(slugs) > 1 and spec.aggregation not in openmeter_meters.MERGEABLE:
        raise ValidationFailed(
            f"{spec.aggregation} history of a meter reading several types is not exact"
        )
    if not settings.openmeter_enabled:
        raise HistoryUnavailable("history comes from OpenMeter, which is disabled here")
    if api is None:
        api = openmeter_api.OpenMeterApi(settings)
    params: list[tuple[str, str]] = [
        ("subject", tenant_id),  # forced: the key's tenant, never the request's
        ("from", rfc3339(start, timespec="auto")),
        ("to", rfc3339(end, timespec="auto")),
        ("windowSize", window_size),
        ("windowTimeZone", "UTC"),
        *(("groupBy", d) for d in group_by),
    ]
    merged: dict[tuple[str, str, tuple[tuple[str, Any], ...]], Decimal] = {}
    for slug, _ in slugs:
        try:
            answer = api.query(slug, params)
        except (openmeter_api.OpenMeterUnavailable, openmeter_api.OpenMeterMisconfigured) as exc:
            raise HistoryUnavailable(f"OpenMeter could not answer: {exc.message}") from exc
        for row in answer.get("data", []):
            if row.get("subject") not in (None, tenant_id):
                continue  # defence in depth: never another tenant's row
            groups = row.get("groupBy") or {}
            key = (
                str(row["windowStart"]),
                str(row["windowEnd"]),
                tuple((d, groups.get(d)) for d in group_by),
            )
            value = Decimal(str(row["value"]))
            if key not in merged:
                merged[key] = value
            elif spec.aggregation == "MAX":
                merged[key] = max(merged[key], value)
            elif spec.aggregation == "MIN":
                merged[key] = min(merged[key], value)
            else:
                merged[key] += value
    return {
        "meter": meter,
        "from": rfc3339(start, timespec="auto"),
        "to": rfc3339(end, timespec="auto"),
        "window_size": window_size,
        "data": [
            {
                "window_start": ws,
                "window_end": we,
                "value": as_number(value),
                "group_by": dict(groups),
            }
            for (ws, we, groups), value in sorted(merged.items())
        ],
    }
