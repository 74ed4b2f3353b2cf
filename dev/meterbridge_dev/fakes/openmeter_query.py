"""The local OpenMeter stand-in's meter and query API, as OpenMeter's ``api/openapi.yaml``
has it, aggregating what the sink received.

- ``GET/POST /api/v1/meters``, ``GET/PUT/DELETE /api/v1/meters/{meterIdOrSlug}``: meters with
  ``slug``, ``eventType``, ``aggregation``, ``valueProperty``, ``groupBy`` (create fields;
  update changes ``description``, ``name`` and ``groupBy`` only, as OpenMeter's MeterUpdate).
- ``GET /api/v1/meters/{meterIdOrSlug}/query``: ``from``, ``to``, ``windowSize``
  (MINUTE|HOUR|DAY|MONTH), ``subject`` (repeatable), ``groupBy`` (repeatable),
  ``filterGroupBy[dim]=value`` (deepObject): ``{"from", "to", "windowSize", "data": [{"value",
  "windowStart", "windowEnd", "subject", "groupBy"}]}``. Events are deduplicated on
  ``(source, id)`` as OpenMeter does; the window is by event ``time``.
"""

from __future__ import annotations

import hmac
import re
import threading
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from meterbridge import jsonpath
from meterbridge.timestamps import rfc3339

SLUG = re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)*$")
AGGREGATIONS = ("SUM", "COUNT", "UNIQUE_COUNT", "AVG", "MIN", "MAX", "LATEST")
WINDOWS = ("MINUTE", "HOUR", "DAY", "MONTH")
CREATE_FIELDS = {
    "slug", "aggregation", "eventType", "valueProperty", "groupBy", "description", "name",
    "metadata", "eventFrom",
}  # fmt: skip
UPDATE_FIELDS = {"description", "name", "groupBy", "metadata"}


def _problem(status: int, detail: str) -> JSONResponse:
    return JSONResponse(
        {"type": "about:blank", "title": "Bad Request" if status == 400 else "Error",
         "status": status, "detail": detail},
        status_code=status,
        media_type="application/problem+json",
    )  # fmt: skip


def _time(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError("a time zone is required")
    return value.astimezone(UTC)


def _window_start(moment: datetime, size: str) -> tuple[datetime, datetime]:
    if size == "MINUTE":
        start = moment.replace(second=0, microsecond=0)
        return start, start + timedelta(minutes=1)
    if size == "HOUR":
        start = moment.replace(minute=0, second=0, microsecond=0)
        return start, start + timedelta(hours=1)
    if size == "DAY":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start, end


def _scalar(value: Any) -> str | None:
    if value is None or value is jsonpath.MISSING:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value if isinstance(value, str) else str(value)


class MeterRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.meters: dict[str, dict[str, Any]] = {}

    def find(self, id_or_slug: str) -> dict[str, Any] | None:
        with self._lock:
            for meter in self.meters.values():
                if id_or_slug in (meter["id"], meter["slug"]):
                    return dict(meter)
        return None


def _aggregate(meter: dict[str, Any], events: list[dict[str, Any]]) -> Decimal | None:
    agg = meter["aggregation"]
    if agg == "COUNT":
        return Decimal(len(events))
    path = jsonpath.parse(meter["valueProperty"])
    raw = [path.find(e.get("data") or {}) for e in events]
    if agg == "UNIQUE_COUNT":
        return Decimal(len({_scalar(v) for v in raw if _scalar(v) is not None}))
    numbers: list[tuple[tuple[str, str], Decimal]] = []
    for event, value in zip(events, raw, strict=True):
        try:
            numbers.append(((event["time"], event["id"]), Decimal(str(value))))
        except (InvalidOperation, ValueError):
            continue
    if not numbers:
        return None
    values = [n for _, n in numbers]
    if agg == "SUM":
        return sum(values, Decimal(0))
    if agg == "MAX":
        return max(values)
    if agg == "MIN":
        return min(values)
    if agg == "AVG":
        return sum(values, Decimal(0)) / len(values)
    return max(numbers, key=lambda pair: pair[0])[1]  # LATEST


def install(app: FastAPI, recorded: Any, api_key: str | None = None) -> MeterRegistry:
    """Add the meter and query routes to the sink ``app``; ``recorded()`` gives its events.
    With ``api_key``, every route wants ``Authorization: Bearer <api_key>`` (401 otherwise)."""
    registry = MeterRegistry()
    app.state.meters = registry

    @app.middleware("http")
    async def _auth(request: Request, call_next: Any) -> Any:
        wanted = f"Bearer {api_key}"
        if (
            api_key is not None
            and request.url.path.startswith("/api/v1/meters")
            and not hmac.compare_digest(request.headers.get("authorization", ""), wanted)
        ):
            return _problem(401, "missing or invalid bearer token")
        return await call_next(request)

    @app.get("/api/v1/meters")
    async def list_meters() -> list[dict[str, Any]]:
        with registry._lock:
            return [dict(m) for m in registry.meters.values()]

    @app.post("/api/v1/meters", status_code=201)
    async def create_meter(request: Request) -> Any:
        body = await request.json()
        if not isinstance(body, dict) or set(body) - CREATE_FIELDS:
            return _problem(400, "unknown fields")
        slug, agg, event_type = body.get("slug"), body.get("aggregation"), body.get("eventType")
        if not isinstance(slug, str) or not SLUG.match(slug) or len(slug) > 64:
            return _problem(400, "slug must match ^[a-z0-9]+(?:_[a-z0-9]+)*$")
        if agg not in AGGREGATIONS or not isinstance(event_type, str) or not event_type:
            return _problem(400, "aggregation and eventType are required")
        if (agg == "COUNT") != (body.get("valueProperty") is None):
            return _problem(400, "valueProperty is required for every aggregation but COUNT")
        for path in [body.get("valueProperty"), *(body.get("groupBy") or {}).values()]:
            if path is not None:
                try:
                    jsonpath.parse(path)
                except jsonpath.JSONPathError as exc:
                    return _problem(400, str(exc))
        with registry._lock:
            if any(m["slug"] == slug for m in registry.meters.values()):
                return _problem(409, f"meter {slug} exists")
            now = rfc3339(timespec="auto")
            meter = {
                "id": uuid.uuid4().hex[:26].upper(),
                "createdAt": now,
                "updatedAt": now,
                "groupBy": {},
                **body,
            }
            registry.meters[meter["id"]] = meter
            return JSONResponse(meter, status_code=201)

    @app.get("/api/v1/meters/{meter_id}")
    async def get_meter(meter_id: str) -> Any:
        meter = registry.find(meter_id)
        return meter if meter is not None else _problem(404, "no such meter")

    @app.put("/api/v1/meters/{meter_id}")
    async def update_meter(meter_id: str, request: Request) -> Any:
        body = await request.json()
        meter = registry.find(meter_id)
        if meter is None:
            return _problem(404, "no such meter")
        if not isinstance(body, dict) or set(body) - UPDATE_FIELDS:
            return _problem(400, "a meter update changes description, name and groupBy only")
        with registry._lock:
            stored = registry.meters[meter["id"]]
            stored.update(body, updatedAt=rfc3339(timespec="auto"))
            return dict(stored)

    @app.delete("/api/v1/meters/{meter_id}", response_model=None)
    async def delete_meter(meter_id: str) -> Response:
        meter = registry.find(meter_id)
        if meter is None:
            return _problem(404, "no such meter")
        with registry._lock:
            registry.meters.pop(meter["id"], None)
        return Response(status_code=204)

    @app.get("/api/v1/meters/{meter_id}/query")
    async def query_meter(meter_id: str, request: Request) -> Any:
        meter = registry.find(meter_id)
        if meter is None:
            return _problem(404, "no such meter")
        params = request.query_params
        try:
            start = _time(params["from"]) if "from" in params else None
            end = _time(params["to"]) if "to" in params else None
        except ValueError as exc:
            return _problem(400, f"from/to: {exc}")
        window = params.get("windowSize")
        if window is not None and window not in WINDOWS:
            return _problem(400, "windowSize must be MINUTE, HOUR, DAY or MONTH")
        subjects = params.getlist("subject")
        group_by = params.getlist("groupBy")
        filters = {
            key[len("filterGroupBy[") : -1]: value
            for key, value in params.multi_items()
            if key.startswith("filterGroupBy[") and key.endswith("]")
        }
        dims = meter.get("groupBy") or {}
        unknown = [d for d in [*group_by, *filters] if d not in dims and d != "subject"]
        if unknown:
            return _problem(400, f"unknown group by: {', '.join(unknown)}")
        seen: set[tuple[str, str]] = set()
        buckets: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for event in recorded():
            key = (event.get("source"), event.get("id"))
            if key in seen or event.get("type") != meter["eventType"]:
                continue
            seen.add(key)
            moment = _time(event["time"])
            if (start and moment < start) or (end and moment >= end):
                continue
            if subjects and event.get("subject") not in subjects:
                continue
            data = event.get("data") or {}
            values = {d: _scalar(jsonpath.parse(p).find(data)) for d, p in dims.items()}
            if any(values.get(d) != v for d, v in filters.items()):
                continue
            bounds = _window_start(moment, window) if window else (start, end)
            split_subject = "subject" in group_by or bool(subjects)
            bucket = (
                bounds,
                event.get("subject") if split_subject else None,
                tuple((d, values.get(d)) for d in group_by if d != "subject" or d in dims),
            )
            buckets.setdefault(bucket, []).append(event)
        rows = []
        for (bounds, subject, groups), members in sorted(
            buckets.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]), str(kv[0][2]))
        ):
            value = _aggregate(meter, members)
            if value is None:
                continue
            first = min(_time(e["time"]) for e in members)
            last = max(_time(e["time"]) for e in members)
            rows.append(
                {
                    "value": float(value),
                    "windowStart": rfc3339(bounds[0] or first, timespec="auto"),
                    "windowEnd": rfc3339(bounds[1] or last, timespec="auto"),
                    "subject": subject,
                    "groupBy": dict(groups),
                }
            )
        result: dict[str, Any] = {"data": rows}
        if start:
            result["from"] = rfc3339(start, timespec="auto")
        if end:
            result["to"] = rfc3339(end, timespec="auto")
        if window:
            result["windowSize"] = window
        return result

    return registry
