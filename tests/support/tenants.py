"""Fixtures shared by the tenant and key tests (imported by them; no tests here).

- ``fake_stripe``: the fake Stripe API on loopback, with the env pointing the real client at it.
- ``admin``: FastAPI's TestClient on the admin app, with the admin token set.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
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


def seed_catalog(state: StripeState) -> None:
    """The prices ``meterbridge stripe sync-catalog`` would make, one per priced plan, under
    its lookup key ``meterbridge_<plan id>`` (ids chosen by the stand-in, as Stripe does)."""
    from meterbridge.plans import catalog

    for plan in catalog().plans.values():
        if plan.base_price_cents:
            state.add_price(
                unit_amount=plan.base_price_cents,
                currency=plan.currency,
                lookup_key=f"meterbridge_{plan.id}",
            )


def price_key(subscription: dict[str, Any]) -> str:
    """The lookup key of a subscription's (first) price."""
    return str(subscription["items"]["data"][0]["price"]["lookup_key"])


@contextmanager
def _stripe_stand_in(monkeypatch: pytest.MonkeyPatch, *, seeded: bool) -> Iterator[FakeStripe]:
    state = StripeState(api_key="sk_test_meterbridge", strict_prices=True)
    if seeded:
        seed_catalog(state)
    with BackgroundServer(create_stripe_app(state)) as server:
        monkeypatch.setenv("STRIPE_API_KEY", "sk_test_meterbridge")
        monkeypatch.setenv("STRIPE_API_BASE", server.url)
        reset_singletons()
        yield FakeStripe(state=state, url=server.url)


@pytest.fixture
def bare_stripe(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeStripe]:
    """The Stripe stand-in with nothing in it (no prices: the catalogue never synced)."""
    with _stripe_stand_in(monkeypatch, seeded=False) as fake:
        yield fake


@pytest.fixture
def fake_stripe(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeStripe]:
    """The Stripe stand-in with the plans' prices in it."""
    with _stripe_stand_in(monkeypatch, seeded=True) as fake:
        yield fake


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
