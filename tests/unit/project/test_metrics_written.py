"""Every metric an alert, alarm or dashboard panel uses is *written* by the code (issue 17).

Declaring a Prometheus metric is not enough for an alert to move: some code must call
``inc``/``set``/``observe`` on it. This reads the source (AST) for such calls on each metric
the alert rules and the dashboard query, and, for CloudWatch alarms on log metric filters,
checks that the code logs the message the filter matches.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from meterbridge_dev.stack.tables import load_template
from tests.support.observability import (
    PROMETHEUS_BUILTIN,
    ROOT,
    dashboard_targets,
    rules,
    series_in,
)

WRITES = frozenset({"inc", "dec", "set", "observe", "set_to_current_time", "time"})
SOURCES = [
    *ROOT.glob("shared/meterbridge/**/*.py"),
    *ROOT.glob("services/streaming/**/*.py"),
    *ROOT.glob("dev/meterbridge_dev/**/*.py"),
    *ROOT.glob("functions/*/app.py"),
]
PROMETHEUS = ROOT / "services" / "streaming" / "meterbridge_streaming" / "metrics.py"


def declared() -> dict[str, str]:
    """Series name (as PromQL sees it) -> the Python name it is declared under."""
    tree = ast.parse(PROMETHEUS.read_text())
    found: dict[str, str] = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)):
            continue
        kind = getattr(node.value.func, "id", "")
        first = node.value.args[0] if node.value.args else None
        if kind not in ("Counter", "Gauge", "Histogram", "Summary"):
            continue
        assert isinstance(first, ast.Constant), ast.dump(node)
        var = node.targets[0].id  # type: ignore[attr-defined]
        name = str(first.value)
        if kind == "Counter":
            found[name.removesuffix("_total") + "_total"] = var
        elif kind in ("Histogram", "Summary"):
            for suffix in ("_bucket", "_sum", "_count"):
                found[name + suffix] = var
        else:
            found[name] = var
    return found


def _base(node: ast.AST) -> str | None:
    """``X`` of ``X.labels(...).inc()``, ``prometheus.X.observe()``, ``child(X, label).inc()``."""
    while True:
        if isinstance(node, ast.Call):
            metric_arg = next(
                (a.id for a in node.args if isinstance(a, ast.Name) and a.id.isupper()), None
            )
            if metric_arg:
                return metric_arg
            node = node.func
        elif isinstance(node, ast.Attribute):
            if node.attr.isupper():
                return node.attr
            node = node.value
        elif isinstance(node, ast.Name):
            return node.id
        else:
            return None


def written() -> set[str]:
    """Python names of metrics on which some code calls a write method."""
    names: set[str] = set()
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in WRITES
            ):
                base = _base(node.func.value)
                if base:
                    names.add(base)
    return names


def logged_messages() -> str:
    return "\n".join(path.read_text() for path in SOURCES)


def test_every_prometheus_series_an_alert_or_panel_uses_is_written() -> None:
    # Given the series the alert rules and the dashboard use
    used = {s for rule in rules() for s in series_in(rule["expr"])}
    used |= {s for t in dashboard_targets() if "expr" in t for s in series_in(t["expr"])}
    used -= PROMETHEUS_BUILTIN
    names = declared()

    # When the code is read for writes
    writes = written()

    # Then every one is declared and written somewhere
    undeclared = sorted(s for s in used if s not in names)
    unwritten = sorted(f"{s} ({names[s]})" for s in used if s in names and names[s] not in writes)
    assert len(used) >= 15
    assert not undeclared, undeclared
    assert not unwritten, unwritten


def test_every_log_metric_filter_matches_a_message_the_code_logs() -> None:
    # Given the template's metric filters on log messages
    resources = load_template(ROOT / "template.yaml")["Resources"]
    patterns = [
        r["Properties"]["FilterPattern"]
        for r in resources.values()
        if r["Type"] == "AWS::Logs::MetricFilter"
    ]
    source = logged_messages()

    # When each filter's message is looked up in the code
    messages = [m for p in patterns for m in re.findall(r'\$\.message\s*=\s*"([^"]+)"', p)]

    # Then each is logged (a renamed log line would silence its alarm)
    assert messages
    missing = [m for m in messages if f'"{m}"' not in source]
    assert not missing, missing


def test_the_write_scan_sees_writes_and_their_absence() -> None:
    # Given metrics known to be written (API requests) and a name nothing writes
    writes = written()

    # Then the scan finds the first and not the second
    assert "API_REQUESTS" in writes
    assert "NOT_A_METRIC" not in writes
    assert Path(PROMETHEUS).is_file()
