"""History through OpenMeter's query API, against the local stand-in: the request parameters
meterbridge sends are the ones OpenMeter's ``api/openapi.yaml`` defines (an excerpt is kept
in ``openmeter_query_spec.json``), and a tenant never sees another tenant's subjects."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from meterbridge.adapters.openmeter_api import OpenMeterApi
from meterbridge.logic import flush, ingest, openmeter_meters
from meterbridge.plans import catalog
from meterbridge.settings import get_settings
from meterbridge_dev.fakes.openmeter_sink import SinkState, create_app
from meterbridge_dev.stack.servers import BackgroundServer
from tests.support.builders import make_tenant
from tests.support.fixtures import reset_singletons

SPEC = json.loads((Path(__file__).with_name("openmeter_query_spec.json")).read_text())
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def openmeter(aws: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[SinkState]:
    state = SinkState("om_test")
    with BackgroundServer(create_app(state)) as server:
        monkeypatch.setenv("OPENMETER_ENABLED", "true")
        monkeypatch.setenv("OPENMETER_BASE_URL", server.url)
        monkeypatch.setenv("OPENMETER_API_KEY", "om_test")
        reset_singletons()
        yield state


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, Any]]:
    """Every request meterbridge makes to OpenMeter's meter and query API."""
    seen: list[tuple[str, str, Any]] = []
    original = OpenMeterApi._call

    def record(self: OpenMeterApi, method: str, path: str, **kwargs: Any) -> Any:
        seen.append((method, path, kwargs.get("params") or kwargs.get("json")))
        return original(self, method, path, **kwargs)

    monkeypatch.setattr(OpenMeterApi, "_call", record)
    return seen


def _send(tenant: str, events: list[dict[str, Any]]) -> None:
    ingest.ingest(tenant, "pro", events, now=NOW)
    result = flush.flush_outbox(None)
    assert result.remaining == 0


def _llm(i: int, subject: str, model: str, tokens: int, minutes_ago: int) -> dict[str, Any]:
    moment = NOW - timedelta(minutes=minutes_ago)
    return {
        "id": f"c{i}",
        "type": "llm.completion",
        "subject": subject,
        "time": moment.isoformat().replace("+00:00", "Z"),
        "data": {"tokens": tokens, "model": model, "user_id": subject},
    }


def _check_against_spec(params: list[tuple[str, str]]) -> None:
    spec = {p["name"]: p for p in SPEC["query"]["parameters"] if p["in"] == "query"}
    for name, value in params:
        assert name in spec, f"{name} is not a query parameter of OpenMeter's meter query"
        schema = spec[name]["schema"]
        if schema.get("format") == "date-time":
            assert datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None
        if "enum" in schema:
            assert value in schema["enum"]
        if schema.get("type") == "array":
            assert isinstance(value, str)  # form style, exploded: one key per item
    singles = [n for n, p in spec.items() if p["schema"].get("type") != "array"]
    for name in singles:
        assert sum(1 for n, _ in params if n == name) <= 1, name


def test_history_query_sends_openmeters_parameters_and_only_the_key_tenant(
    openmeter: SinkState, calls: list[tuple[str, str, Any]]
) -> None:
    # Given the catalogue's meters synced to OpenMeter, and two tenants' events flushed there
    sync = openmeter_meters.sync(catalog(), OpenMeterApi(get_settings()))
    assert {b["slug"] for b in sync.create} >= {"tokens", "api_calls_1", "api_calls_2"}
    creates = [body for method, _, body in calls if method == "POST"]
    assert len(creates) == len(sync.create)
    for body in creates:
        assert set(body) <= set(SPEC["meter_create"]["properties"])
        assert re.match(SPEC["meter_create"]["slug_pattern"], body["slug"])
        assert body["aggregation"] in SPEC["meter_create"]["aggregation"]
    tenant_a, _ = make_tenant("pro")
    tenant_b, _ = make_tenant("pro")
    _send(
        tenant_a,
        [
            _llm(1, "alice", "small", 100, 70),
            _llm(2, "bob", "large", 50, 65),
            _llm(3, "alice", "large", 7, 5),
        ],
    )
    _send(tenant_b, [_llm(1, "mallory", "small", 1000, 60)])
    # When A asks for its tokens by hour, by subject and model
    from meterbridge.logic import history

    calls.clear()
    start = NOW - timedelta(hours=3)
    answer = history.query(
        tenant_a, "tokens", start, NOW + timedelta(minutes=1), "HOUR", ("subject", "model")
    )
    # Then the request carried OpenMeter's parameters, the subject forced to A
    [(method, path, params)] = calls
    assert (method, path) == ("GET", "/api/v1/meters/tokens/query")
    _check_against_spec(params)
    assert [v for n, v in params if n == "subject"] == [tenant_a]
    # And A sees its own subjects' usage, never B's
    rows = answer["data"]
    assert {r["group_by"]["subject"] for r in rows} == {"alice", "bob"}
    assert sum(r["value"] for r in rows) == 157
    by = {(r["group_by"]["subject"], r["group_by"]["model"]): r["value"] for r in rows}
    assert by[("alice", "small")] == 100 and by[("bob", "large")] == 50
    # And B's view holds only mallory
    other = history.query(
        tenant_b, "tokens", start, NOW + timedelta(minutes=1), "DAY", ("subject",)
    )
    assert [r["group_by"] for r in other["data"]] == [{"subject": "mallory"}]
    # And a meter reading two types adds its OpenMeter meters' rows
    calls_total = history.query(tenant_a, "api_calls", start, NOW + timedelta(minutes=1), "MONTH")
    assert sum(r["value"] for r in calls_total["data"]) == 3


def test_the_meter_api_wants_the_api_key(openmeter: SinkState) -> None:
    base = get_settings().openmeter_base_url
    assert httpx.get(f"{base}/api/v1/meters").status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert httpx.get(f"{base}/api/v1/meters/tokens/query", headers=wrong).status_code == 401
    assert OpenMeterApi(get_settings()).list_meters() == []


def test_sync_meters_is_idempotent(openmeter: SinkState) -> None:
    api = OpenMeterApi(get_settings())
    first = openmeter_meters.sync(catalog(), api)
    again = openmeter_meters.sync(catalog(), api, dry_run=True)
    assert first.create and not again.create and not again.update
    assert sorted(again.unchanged) == sorted(b["slug"] for b in first.create)


def test_history_route_answers_503_when_openmeter_is_disabled_or_down(
    aws: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from meterbridge.api.usage import create_app as usage_app

    _, key = make_tenant("pro")
    params = {
        "meter": "tokens",
        "from": (NOW - timedelta(days=1)).isoformat(),
        "to": NOW.isoformat(),
        "window_size": "DAY",
    }
    with BackgroundServer(usage_app()) as srv:
        get = lambda: httpx.get(  # noqa: E731
            f"{srv.url}/v1/usage/query", params=params, headers={"Authorization": f"Bearer {key}"}
        )
        # Given OpenMeter disabled / Then 503 history_unavailable
        assert get().status_code == 503 and get().json()["error"]["code"] == "history_unavailable"
        # Given OpenMeter enabled but unreachable / Then the same
        monkeypatch.setenv("OPENMETER_ENABLED", "true")
        monkeypatch.setenv("OPENMETER_BASE_URL", "http://127.0.0.1:9")
        reset_singletons()
        down = get()
        assert down.status_code == 503 and down.json()["error"]["code"] == "history_unavailable"
        # And an unknown meter or dimension is a 400
        params["group_by"] = "colour"
        assert get().status_code == 400


def test_sync_meters_command_prints_a_diff_and_dry_run_changes_nothing(
    openmeter: SinkState,
) -> None:
    from typer.testing import CliRunner

    from meterbridge_dev.cli.main import app

    runner = CliRunner()
    # When run with --dry-run / Then it lists what it would create and creates nothing
    dry = runner.invoke(app, ["openmeter", "sync-meters", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "+ tokens: SUM of llm.completion" in dry.output
    assert OpenMeterApi(get_settings()).list_meters() == []
    # When run for real, then again / Then the second run has nothing to do
    assert runner.invoke(app, ["openmeter", "sync-meters"]).exit_code == 0
    again = runner.invoke(app, ["openmeter", "sync-meters"])
    assert again.exit_code == 0 and "created 0, updated 0" in again.output
    assert "= tokens" in again.output
