"""A test catalogue with one meter of each aggregation, and a plain recomputation of them."""

from __future__ import annotations

import json
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from meterbridge.plans import PLANS_FILE_DEFAULT
from tests.support.fixtures import reset_singletons

METERS: dict[str, Any] = {
    "events": {"description": "other types", "unit": "event"},
    "calls": {"description": "llm calls", "unit": "call", "types": ["llm"]},
    "tokens": {
        "description": "tokens",
        "unit": "token",
        "types": ["llm"],
        "aggregation": "SUM",
        "value_property": "$.tokens",
        "group_by": {"model": "$.model"},
    },
    "users": {
        "description": "distinct users",
        "unit": "user",
        "types": ["llm", "seen"],
        "aggregation": "UNIQUE_COUNT",
        "value_property": "$.user",
        "group_by": {"model": "$.model"},
    },
    "peak_gb": {
        "description": "peak",
        "unit": "GB",
        "types": ["gauge"],
        "aggregation": "MAX",
        "value_property": "$.gb",
    },
    "low_gb": {
        "description": "low",
        "unit": "GB",
        "types": ["gauge"],
        "aggregation": "MIN",
        "value_property": "$.gb",
    },
    "gb": {
        "description": "latest",
        "unit": "GB",
        "types": ["gauge"],
        "aggregation": "LATEST",
        "value_property": "$.gb",
        "group_by": {"disk": "$.disk"},
    },
    "credits": {
        "description": "credits",
        "unit": "credit",
        "types": ["credit"],
        "aggregation": "SUM",
        "value_property": "$.amount",
        "allow_negative": True,
    },
}


def write_catalogue(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    free_limits: dict[str, Any] | None = None,
    pro_limits: dict[str, Any] | None = None,
) -> None:
    raw = json.loads(PLANS_FILE_DEFAULT.read_text())
    raw["meters"] = METERS
    for plan in raw["plans"].values():
        plan["limits"] = {}
        plan["overage"] = {}
        plan["requests_per_minute"] = 100_000
    raw["plans"]["free"]["limits"] = free_limits or {}
    raw["plans"]["pro"]["limits"] = pro_limits or {}
    path = tmp_path / "meters-plans.json"
    path.write_text(json.dumps(raw))
    monkeypatch.setenv("METERBRIDGE_PLANS_FILE", str(path))
    reset_singletons()


def recompute(events: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Each meter's value over ``events`` (distinct ids, first wins), the plain way."""
    seen: dict[str, dict[str, Any]] = {}
    for event in events:
        seen.setdefault(event["id"], event)
    out: dict[str, Any] = {}
    llm = [e for e in seen.values() if e["type"] == "llm"]
    gauge = [e for e in seen.values() if e["type"] == "gauge"]
    out["events"] = sum(
        1 for e in seen.values() if e["type"] not in ("llm", "gauge", "credit", "seen")
    )
    out["calls"] = len(llm)
    out["tokens"] = sum((Decimal(str(e["data"]["tokens"])) for e in llm), Decimal(0))
    out["users"] = len(
        {str(e["data"]["user"]) for e in seen.values() if e["type"] in ("llm", "seen")}
    )
    values = [Decimal(str(e["data"]["gb"])) for e in gauge]
    out["peak_gb"] = max(values, default=Decimal(0))
    out["low_gb"] = min(values, default=Decimal(0))
    newest = max(gauge, key=lambda e: (e["time"], e["id"]), default=None)
    out["gb"] = Decimal(0) if newest is None else Decimal(str(newest["data"]["gb"]))
    out["credits"] = sum(
        (Decimal(str(e["data"]["amount"])) for e in seen.values() if e["type"] == "credit"),
        Decimal(0),
    )
    by_model: dict[str | None, Decimal] = {}
    for e in llm:
        model = e["data"].get("model")
        by_model[model] = by_model.get(model, Decimal(0)) + Decimal(str(e["data"]["tokens"]))
    out["tokens_by_model"] = by_model
    return out


def measured(tenant_id: str, plan: str = "pro", group_by: tuple[str, ...] = ()) -> dict[str, Any]:
    """The meters' values as meterbridge reports them (logic.usage_query)."""
    from meterbridge.logic.usage_report import usage_report

    report = usage_report(tenant_id, plan, group_by=group_by)
    out: dict[str, Any] = {m.meter: Decimal(str(m.used)) for m in report.current.meters}
    tokens = next(m for m in report.current.meters if m.meter == "tokens")
    if tokens.groups is not None:
        out["tokens_by_model"] = {g.group_by["model"]: Decimal(str(g.used)) for g in tokens.groups}
    return out
