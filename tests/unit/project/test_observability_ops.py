"""Alarms, alerts, runbook and dashboard held together with the code that emits the metrics.

- every CloudWatch alarm and Prometheus rule links a runbook section that exists, and every
  runbook section is linked by at least one of them;
- alert rules and dashboard queries name only metrics the code emits (Prometheus names
  from ``meterbridge_streaming.metrics.REGISTRY``; EMF names by reading ``add_metric`` calls
  in the source; log metric filters from template.yaml);
- the checked-in dashboard is exactly what ``observability/grafana/build.py`` generates.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from observability.grafana import build

from meterbridge_dev.stack.tables import load_template
from meterbridge_streaming.metrics import REGISTRY
from tests.support.observability import (
    DASHBOARD,
    PROMETHEUS_BUILTIN,
    dashboard_targets,
    rules,
    series_in,
)

ROOT = Path(__file__).resolve().parents[3]
RUNBOOK = ROOT / "docs" / "runbook.md"
RUNBOOK_LINK = re.compile(r"docs/runbook\.md#([a-z0-9-]+)")

# Metrics an alarm or alert waits for: the emitting code is another issue's (named here). The
# last test fails once one is emitted, so the exception cannot outlive its reason.
AWAITING_EMF: dict[str, str] = {}
AWAITING_PROMETHEUS: dict[str, str] = {}
AWS_METRICS = {
    "AWS/Lambda": {"Errors", "Throttles", "Duration", "ConcurrentExecutions", "Url5xxCount"},
    "AWS/ApiGateway": {"5xx"},
    "ECS/ContainerInsights": {"RunningTaskCount", "DesiredTaskCount"},
}


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def runbook_sections() -> set[str]:
    return {slug(m) for m in re.findall(r"^## (.+)$", RUNBOOK.read_text(), re.M)}


def alarms() -> dict[str, dict[str, Any]]:
    resources = load_template(ROOT / "template.yaml")["Resources"]
    return {
        lid: r["Properties"]
        for lid, r in resources.items()
        if r["Type"] == "AWS::CloudWatch::Alarm"
    }


def metric_filter_names() -> set[str]:
    resources = load_template(ROOT / "template.yaml")["Resources"]
    return {
        t["MetricName"]
        for r in resources.values()
        if r["Type"] == "AWS::Logs::MetricFilter"
        for t in r["Properties"]["MetricTransformations"]
    }


def prometheus_names() -> set[str]:
    """Every series name the registry can expose (labelled metrics have no samples yet)."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        suffixes = {
            "counter": ["_total"],
            "histogram": ["_bucket", "_sum", "_count"],
            "gauge": [""],
            "summary": ["_sum", "_count", ""],
        }.get(family.type, [""])
        names.update(family.name + s for s in suffixes)
    return names


def emf_names() -> set[str]:
    """Names passed to ``metrics.add_metric`` in shared/ and functions/ (read from the AST).

    A literal ``name=`` counts; a variable counts every CamelCase string literal of the
    function it is in (the webhook picks its metric from a dict by outcome).
    """
    found: set[str] = set()
    for path in [
        *ROOT.glob("shared/meterbridge/**/*.py"),
        *ROOT.glob("services/streaming/**/*.py"),
        *ROOT.glob("dev/meterbridge_dev/**/*.py"),
        *ROOT.glob("functions/*/app.py"),
    ]:
        tree = ast.parse(path.read_text())
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for call in ast.walk(func):
                if not (
                    isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Attribute)
                    and call.func.attr == "add_metric"
                ):
                    continue
                name = next((k.value for k in call.keywords if k.arg == "name"), None)
                if isinstance(name, ast.Constant) and isinstance(name.value, str):
                    found.add(name.value)
                else:
                    found.update(
                        n.value
                        for n in ast.walk(func)
                        if isinstance(n, ast.Constant)
                        and isinstance(n.value, str)
                        and re.fullmatch(r"(?:[A-Z][a-z0-9]+){2,}", n.value)
                    )
    return found


def test_every_alarm_and_alert_links_an_existing_runbook_section() -> None:
    # Given the runbook's sections
    sections = runbook_sections()

    # When each alarm's description and each rule's runbook_url is read
    links = {
        lid: RUNBOOK_LINK.findall(p.get("AlarmDescription", "")) for lid, p in alarms().items()
    }
    links |= {r["alert"]: RUNBOOK_LINK.findall(r["annotations"]["runbook_url"]) for r in rules()}

    # Then each links exactly one section, and it exists
    assert len(links) > 20
    bad = {name: found for name, found in links.items() if len(found) != 1}
    assert not bad, f"no (or several) runbook links: {bad}"
    missing = {name: found[0] for name, found in links.items() if found[0] not in sections}
    assert not missing, f"runbook sections missing: {missing}"


def test_every_runbook_section_is_linked_by_an_alarm_or_alert() -> None:
    # Given every runbook link of alarms and alerts
    linked = {m for p in alarms().values() for m in RUNBOOK_LINK.findall(p["AlarmDescription"])}
    linked |= {m for r in rules() for m in RUNBOOK_LINK.findall(r["annotations"]["runbook_url"])}

    # When compared with the runbook's sections
    orphans = runbook_sections() - linked

    # Then no section describes an alert that does not exist
    assert not orphans, f"runbook sections without an alarm or alert: {orphans}"


def test_required_alarms_and_alerts_exist() -> None:
    # Given the list: flush errors, backlog age, dead letters, webhook signature and
    # 5xx, Lambda errors and throttles per function, NATS circuit; and the seed's alert names
    metrics = {(p.get("Namespace"), p.get("MetricName")) for p in alarms().values()}
    throttled = {
        str(p["Dimensions"][0]["Value"])
        for p in alarms().values()
        if p.get("MetricName") == "Throttles"
    }
    errored = {
        str(p["Dimensions"][0]["Value"])
        for p in alarms().values()
        if p.get("MetricName") == "Errors"
    }

    # Then each is there
    for needed in [
        ("Meterbridge", "FlushDeliveryFailures"),
        ("Meterbridge", "OutboxOldestAgeSeconds"),
        ("Meterbridge", "OpenMeterFlushDeadLettered"),
        ("Meterbridge", "StripeWebhookRejected"),
        ("AWS/Lambda", "Url5xxCount"),
        ("Meterbridge", "NatsCircuitOpened"),
    ]:
        assert needed in metrics
    functions = {
        "UsageApiFunction",
        "TenantAdminFunction",
        "StripeWebhookFunction",
        "OpenMeterFlushFunction",
    }
    assert throttled == errored == {f"{{'Ref': '{f}'}}" for f in functions}
    assert {"NATSCircuitOpen", "OpenMeterFlushErrors", "HighWebhookLatency"} <= {
        r["alert"] for r in rules()
    }
    assert all(p["AlarmActions"] == [{"Ref": "AlarmTopic"}] for p in alarms().values())


def test_alarms_and_alerts_watch_metrics_the_code_emits() -> None:
    # Given what the code emits
    emf = emf_names() | metric_filter_names() | set(AWAITING_EMF)
    prom = prometheus_names() | PROMETHEUS_BUILTIN
    prom |= {f"{n}_bucket" for n in AWAITING_PROMETHEUS}

    # When each alarm's and rule's metrics are read
    unknown: list[str] = []
    for lid, props in alarms().items():
        stats = [props] + [
            q["MetricStat"]["Metric"] for q in props.get("Metrics", []) if "MetricStat" in q
        ]
        for stat in stats:
            if "MetricName" not in stat:
                continue
            ns, name = stat["Namespace"], stat["MetricName"]
            known = emf if ns == "Meterbridge" else AWS_METRICS.get(ns, set())
            if name not in known:
                unknown.append(f"{lid}: {ns}/{name}")
    for rule in rules():
        unknown += [f"{rule['alert']}: {s}" for s in series_in(rule["expr"]) - prom]

    # Then none watches a metric nothing emits
    assert not unknown, unknown


def test_dashboard_queries_name_only_metrics_the_code_emits() -> None:
    # Given the checked-in dashboard and what the code emits
    targets = dashboard_targets()
    emf = emf_names() | metric_filter_names()
    prom = prometheus_names()

    # When every query is read
    unknown: list[str] = []
    for target in targets:
        if "expr" in target:
            series = series_in(target["expr"])
            assert series, target["expr"]
            unknown += sorted(series - prom)
        else:
            ns, name = target["namespace"], target["metricName"]
            known = emf if ns == "Meterbridge" else AWS_METRICS.get(ns, set())
            if name not in known:
                unknown.append(f"{ns}/{name}")

    # Then there are both kinds, and each names an emitted metric
    assert sum("expr" in t for t in targets) >= 10
    assert sum("metricName" in t for t in targets) >= 10
    assert not unknown, unknown


def test_checked_in_dashboard_is_the_generated_one() -> None:
    # Given the builder
    # When it renders the dashboard
    generated = build.render()

    # Then the checked-in file is identical (regenerate: python -m observability.grafana.build)
    assert DASHBOARD.read_text() == generated


def test_awaited_metrics_are_still_missing() -> None:
    # Given the metrics alarms wait for
    # When the code is scanned
    emitted_emf = emf_names() & set(AWAITING_EMF)
    emitted_prom = {n for n in AWAITING_PROMETHEUS if f"{n}_bucket" in prometheus_names()}

    # Then none is emitted yet; once one is, remove it from AWAITING_* above
    assert not emitted_emf and not emitted_prom, (emitted_emf, emitted_prom)
