"""The test harness: real servers on loopback, one fixture each.

- ``moto_server``: a moto server over HTTP (session); ``aws``: fresh tables for one test,
  built from template.yaml's own key schemas, and the env pointing at them.
- ``nats_server``: a real ``nats-server -js`` with its own store directory, killable.
- ``openmeter``: the OpenMeter-compatible sink, recording every CloudEvent, with faults.
- The OpenMeter sink and the fake Stripe API run per test through
  ``meterbridge_dev.stack.servers.BackgroundServer`` (fixtures beside the tests that use them).
- ``lambda_context`` and ``event_loader`` for invoking handlers in-process.

What tests import (``reset_singletons``, ``load_event``, ``docker_available``) is in
tests/support/fixtures.py: a test never imports a conftest.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from meterbridge_dev.stack.lambda_runtime import LocalLambdaContext
from meterbridge_dev.stack.processes import LOCAL_DYNAMODB_ENV, MotoServer, NatsServer
from tests.support.fixtures import load_event, reset_singletons

_TABLE_ENV = {
    "TenantsTable": "TENANTS_TABLE",
    "EventsTable": "EVENTS_TABLE",
    "UsageTable": "USAGE_TABLE",
    "IdempotencyTable": "IDEMPOTENCY_TABLE",
}

_SETTING_VARS = (
    "NATS_ENABLED",
    "NATS_SERVERS",
    "OPENMETER_ENABLED",
    "OPENMETER_BASE_URL",
    "OPENMETER_API_KEY",
    "STRIPE_API_KEY",
    "STRIPE_API_BASE",
    "STRIPE_WEBHOOK_SECRET",
    "METERBRIDGE_ADMIN_TOKEN",
    "METERBRIDGE_ADMIN_AUTH",
    "METERBRIDGE_KEY_PEPPER",
    "METERBRIDGE_STREAM_TOKEN_SECRET",
    *_TABLE_ENV.values(),
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Every test starts from the same quiet environment (no real endpoints, NATS off)."""
    for var in _SETTING_VARS:
        monkeypatch.delenv(var, raising=False)
    # The table names have no defaults: names of tables that do not exist until ``aws`` makes
    # fresh ones, so a test that forgets ``aws`` fails on the table, not on the settings.
    for logical_id, var in _TABLE_ENV.items():
        monkeypatch.setenv(var, f"mb-test-no-{logical_id.removesuffix('Table').lower()}")
    for var in ("METERBRIDGE_URL", "METERBRIDGE_STACK_NAME", "AWS_ENDPOINT_URL_DYNAMODB"):
        monkeypatch.delenv(var, raising=False)
    # No test finds a `meterbridge dev` the developer runs beside the suite.
    monkeypatch.setenv("METERBRIDGE_STATE_FILE", str(tmp_path / "meterbridge-state" / "dev.json"))
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("NATS_ENABLED", "false")
    monkeypatch.setenv("OPENMETER_ENABLED", "false")
    monkeypatch.setenv("METERBRIDGE_KEY_PEPPER", "test-pepper-not-secret")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "Meterbridge")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    for var, value in LOCAL_DYNAMODB_ENV.items():  # moto on a loaded machine: see there
        monkeypatch.setenv(var, value)
    reset_singletons()
    yield
    reset_singletons()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture
def aws(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Fresh tables (from template.yaml) on the moto server, and env pointing at them."""
    from meterbridge.dal import dynamo
    from meterbridge_dev.stack.tables import create_tables

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.url)
    suffix = uuid.uuid4().hex[:8]
    names = {lid: f"mb-{lid.removesuffix('Table').lower()}-{suffix}" for lid in _TABLE_ENV}
    for lid, name in names.items():
        monkeypatch.setenv(_TABLE_ENV[lid], name)
    reset_singletons()
    create_tables(dynamo.client(), names)
    return names


@pytest.fixture
def nats_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[NatsServer]:
    server = NatsServer()
    server.start()
    monkeypatch.setenv("NATS_ENABLED", "true")
    monkeypatch.setenv("NATS_SERVERS", server.url)
    reset_singletons()
    yield server
    server.cleanup()


@pytest.fixture
def lambda_context() -> LocalLambdaContext:
    return LocalLambdaContext(function_name="meterbridge-test", timeout_s=30.0)


@pytest.fixture
def event_loader():
    return load_event
