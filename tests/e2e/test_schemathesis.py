"""Property-based API tests: schemathesis against the schemas the apps serve, over HTTP.

The usage API and the admin API each run under uvicorn on loopback (the local stack's
servers) against fresh tables on the moto server; schemathesis generates valid and invalid
requests for every operation and sends them with a real tenant key (usage) or the admin token
(admin). Every answer must be: not a 5xx, a status the schema documents for the operation, a
content type it documents, and a body that matches the documented schema. Bounded and
deterministic: few examples per operation, derandomized.

The schema is taken from the app at collection and each fixture asserts the running server
serves exactly it: schemathesis' lazy loader (``schemathesis.pytest.from_fixture``) fails on
pytest 9 (it writes ``Function._nodeid``, which pytest 9 no longer has).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from meterbridge.api.admin import create_app as create_admin_app
from meterbridge.api.usage import create_app as create_usage_app
from meterbridge_dev.stack.servers import BackgroundServer
from tests.support.builders import make_tenant
from tests.support.fixtures import reset_singletons
from tests.support.tenants import ADMIN_TOKEN
from tests.support.tenants import fake_stripe as fake_stripe

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Positive and negative cases; the coverage phase adds the schema's boundary values
# (lengths, patterns, enum members) deterministically.
CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {"mode": "all", "max-examples": 30, "deterministic": True},
        "phases": {"stateful": {"enabled": False}},
    }
)
BOUNDED = settings(
    max_examples=30,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def _schema(app: Any) -> Any:
    """The app's OpenAPI schema, loaded at collection (schemathesis parametrizes from it)."""
    return schemathesis.openapi.from_dict(app.openapi(), config=CONFIG)


def _serve(app: Any, schema: Any) -> Iterator[str]:
    with BackgroundServer(app) as server:
        # The schema under test is the one the running server serves, not a copy.
        served = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
        assert served == schema.raw_schema
        yield server.url


usage = _schema(create_usage_app())
admin = _schema(create_admin_app())


@pytest.fixture
def usage_api(aws: dict[str, str]) -> Iterator[tuple[str, dict[str, str]]]:
    """The usage API served by uvicorn, and the headers of a Pro tenant's key (a rate limit of
    10,000 requests per minute, so generated requests are not all answered with 429)."""
    _, key = make_tenant("pro")
    for url in _serve(create_usage_app(), usage):
        yield url, {"Authorization": f"Bearer {key}"}


@pytest.fixture
def admin_api(
    aws: dict[str, str], fake_stripe: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, dict[str, str]]]:
    """The admin API served by uvicorn with token auth, Stripe being the loopback fake."""
    monkeypatch.setenv("METERBRIDGE_ADMIN_TOKEN", ADMIN_TOKEN)
    reset_singletons()
    for url in _serve(create_admin_app(), admin):
        yield url, {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@usage.parametrize()
@BOUNDED
def test_usage_api_answers_within_its_schema(
    case: schemathesis.Case, usage_api: tuple[str, dict[str, str]]
) -> None:
    # Given a generated request (valid or not) with a real tenant key
    url, headers = usage_api
    # When it is sent to the running usage API
    # Then no 5xx, and the status, content type and body are the documented ones
    case.call_and_validate(base_url=url, headers=headers, checks=CHECKS, timeout=30)


@admin.parametrize()
@BOUNDED
def test_admin_api_answers_within_its_schema(
    case: schemathesis.Case, admin_api: tuple[str, dict[str, str]]
) -> None:
    # Given a generated request (valid or not) with the admin token
    url, headers = admin_api
    # When it is sent to the running admin API
    # Then no 5xx, and the status, content type and body are the documented ones
    case.call_and_validate(base_url=url, headers=headers, checks=CHECKS, timeout=30)
