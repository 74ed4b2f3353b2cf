"""The alert rules and the dashboard as data: their series, for the observability checks."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


ALERTS = ROOT / "observability" / "prometheus" / "alerts.yml"


DASHBOARD = ROOT / "observability" / "grafana" / "meterbridge.json"


# Prometheus' own series, not the code's.
PROMETHEUS_BUILTIN = {"up"}


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def series_in(expr: str) -> set[str]:
    """Metric names in a PromQL expression (identifiers that are not functions or labels)."""
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(by|without)\s*\([^)]*\)", "", expr)  # grouping labels
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    words = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b(?!\s*\()", expr))
    return {w for w in words if w.startswith("meterbridge_") or w in PROMETHEUS_BUILTIN}


def dashboard_targets() -> list[dict[str, Any]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t for p in panels for t in p.get("targets", [])]
