"""Fixtures shared by the tenant and key tests (imported by them; no tests here).

- ``fake_stripe``: the fake Stripe API on loopback, with the env pointing the real client at it.
- ``admin``: FastAPI's TestClient on the admin app, with the admin token set.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from meterbridge_dev.fakes.stripe_fake import StripeState
from meterbridge_dev.fakes.stripe_fake import create_app as create_stripe_app
from meterbridge_dev.stack.servers import BackgroundServer
from tests.support.fixtures import reset_singletons

ADMIN_TOKEN = "admin-token-for-tests"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@dataclass
class FakeStripe:
    state: StripeState
    url: str


@pytest.fixture
def fake_stripe(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeStripe]:
    state = StripeState(api_key="sk_test_meterbridge")
    with BackgroundServer(create_stripe_app(state)) as server:
        monkeypatch.setenv("STRIPE_API_KEY", "sk_test_meterbridge")
        monkeypatch.setenv("STRIPE_API_BASE", server.url)
        reset_singletons()
        yield FakeStripe(state=state, url=server.url)


@pytest.fixture
def admin(aws: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("METERBRIDGE_ADMIN_TOKEN", ADMIN_TOKEN)
    reset_singletons()
    from meterbridge.api.admin import create_app
    from meterbridge.logic.auth import forget

    forget()
    with TestClient(create_app()) as client:
        yield client


def idem() -> dict[str, str]:
    return {**AUTH, "Idempotency-Key": f"test-{uuid.uuid4()}"}


def body(**overrides: Any) -> dict[str, Any]:
    return {"name": "Acme Analytics", "email": "billing@acme.example", "plan": "basic", **overrides}


def scan_all(table: str) -> list[dict[str, Any]]:
    """Every item of ``table`` (raw DynamoDB JSON), through the same client the DAL uses."""
    from meterbridge.dal import dynamo

    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": table}
    while True:
        page = dynamo.client().scan(**kwargs)
        items.extend(page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def plain_items(table: str) -> list[dict[str, Any]]:
    from meterbridge.dal import dynamo

    return [dynamo.deserialize(i) for i in scan_all(table)]
