"""The money loop's local stack (no tests here): moto, the dev app over HTTP, the Stripe
stand-in delivering signed webhooks to it, and a Basic tenant on a test clock.

Basic keeps its prices but gets small limits (api_calls 5, queries 3) from a plans file, so a
handful of events crosses them.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe

from meterbridge.adapters.stripe_billing import CALENDAR_MONTH_ANCHOR
from meterbridge.dal import dynamo, tenant_state
from meterbridge.dal import tenants as tenants_dal
from meterbridge.dal import usage as usage_dal
from meterbridge.logic import auth
from meterbridge.logic.periods import bounds
from meterbridge.plans import PLANS_FILE_DEFAULT
from meterbridge.settings import get_settings
from meterbridge_dev.fakes.stripe_fake import StripeState
from meterbridge_dev.fakes.stripe_fake import create_app as create_stripe_app
from meterbridge_dev.stack.devapp import create_dev_app
from meterbridge_dev.stack.servers import BackgroundServer
from tests.support.builders import make_tenant
from tests.support.fixtures import reset_singletons
from tests.support.tenants import ADMIN_TOKEN, FakeStripe
from tests.support.webhooks import NEW_SECRET

API_KEY = "sk_test_meterbridge_billing"
BASIC_PRICE = "price_meterbridge_basic_monthly"
WAIT_S = 120.0


@dataclass
class Stack:
    url: str
    stripe: StripeState
    client: stripe.StripeClient


@dataclass
class Tenant:
    tenant_id: str
    key: str
    customer: str
    subscription: str
    clock: str


def small_limits_plans(tmp_path: Path) -> Path:
    raw = json.loads(PLANS_FILE_DEFAULT.read_text())
    raw["plans"]["basic"]["limits"].update({"api_calls": 5, "queries": 3})
    path = tmp_path / "plans.json"
    path.write_text(json.dumps(raw))
    return path


@pytest.fixture
def stack(aws: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Stack]:
    state = StripeState(api_key=API_KEY)
    with BackgroundServer(create_stripe_app(state)) as fake:
        monkeypatch.setenv("STRIPE_API_KEY", API_KEY)
        monkeypatch.setenv("STRIPE_API_BASE", fake.url)
        monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", NEW_SECRET)
        monkeypatch.setenv("METERBRIDGE_PLANS_FILE", str(small_limits_plans(tmp_path)))
        reset_singletons()
        auth.forget()
        client = stripe.StripeClient(
            API_KEY,
            base_addresses={"api": fake.url},
            max_network_retries=0,
            http_client=stripe.HTTPXClient(timeout=30.0, allow_sync_methods=True),
        )
        with BackgroundServer(create_dev_app(), graceful_timeout=2.0) as dev:
            state.set_webhook(dev.url + "/stripe/webhook", NEW_SECRET)
            yield Stack(url=dev.url, stripe=state, client=client)


def basic_tenant(stack: Stack, now: int | None = None) -> Tenant:
    """A Basic tenant whose Stripe customer lives on a test clock frozen at ``now``."""
    tenant_id, key = make_tenant(plan="basic")
    if not any(p["id"] == BASIC_PRICE for p in stack.stripe.prices()):
        stack.stripe.add_price(BASIC_PRICE, unit_amount=9900, lookup_key="meterbridge_basic")
    frozen = now or int(time.time())
    clock = stack.client.v1.test_helpers.test_clocks.create(params={"frozen_time": frozen})
    customer = stack.client.v1.customers.create(
        params={"name": tenant_id, "test_clock": clock.id, "metadata": {"tenant_id": tenant_id}}
    )
    tenant_state.link_customer(get_settings().tenants_table, tenant_id, customer.id)
    subscription = stack.client.v1.subscriptions.create(
        params={  # type: ignore[typeddict-item]
            "customer": customer.id,
            "items": [{"price": BASIC_PRICE}],
            "metadata": {"tenant_id": tenant_id},
            **CALENDAR_MONTH_ANCHOR,
        }
    )
    return Tenant(tenant_id, key, customer.id, subscription.id, clock.id)


def send(stack: Stack, tenant: Tenant, event_type: str, count: int) -> None:
    events = [{"id": f"e-{uuid.uuid4().hex}", "type": event_type, "data": {}} for _ in range(count)]
    answer = httpx.post(
        stack.url + "/v1/events",
        json=events,
        headers={"Authorization": f"Bearer {tenant.key}"},
        timeout=30.0,
    )
    assert answer.status_code == 202, answer.text


def usage(stack: Stack, tenant: Tenant) -> dict[str, Any]:
    answer = httpx.get(
        stack.url + "/v1/usage", headers={"Authorization": f"Bearer {tenant.key}"}, timeout=30.0
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def advance(stack: Stack, tenant: Tenant, frozen_time: int) -> None:
    """Advance the tenant's test clock and wait until Stripe says it is ready."""
    clocks = stack.client.v1.test_helpers.test_clocks
    clocks.advance(tenant.clock, params={"frozen_time": frozen_time})
    deadline = time.monotonic() + WAIT_S
    while clocks.retrieve(tenant.clock).status != "ready":
        assert time.monotonic() < deadline, "the test clock never became ready"
        time.sleep(0.1)


def period_end(stack: Stack, tenant: Tenant) -> int:
    sub = stack.stripe.get_subscription(tenant.subscription)
    assert sub is not None
    return int(sub["current_period_end"])


def invoices(stack: Stack, tenant: Tenant) -> list[dict[str, Any]]:
    return sorted(
        (i for i in stack.stripe.invoices() if i["customer"] == tenant.customer),
        key=lambda i: i["created"],
    )


def overage_items(stack: Stack, invoice_id: str) -> list[dict[str, Any]]:
    return [
        i
        for i in stack.stripe.invoiceitems()
        if i["invoice"] == invoice_id and "meterbridge_tenant" in i["metadata"]
    ]


def created_event(stack: Stack, invoice_id: str) -> dict[str, Any]:
    return next(
        e for e in stack.stripe.events("invoice.created") if e["data"]["object"]["id"] == invoice_id
    )


def utc_month(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m")


PERIOD = "2026-01"


AUTH = {"authorization": "Bearer sk_test_meterbridge"}


@pytest.fixture
def setup(
    aws: dict[str, str], fake_stripe: FakeStripe, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[FakeStripe, str, dict[str, Any], dict[str, Any]]]:
    """A Basic tenant 5 queries over its 1,000 in PERIOD, and the draft cycle invoice closing it."""
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", NEW_SECRET)
    reset_singletons()
    settings = get_settings()
    tenant_id, _ = make_tenant(plan="basic")
    status, customer, _ = fake_stripe.state.handle("POST", "/v1/customers", {"name": "x"}, AUTH)
    assert status == 200
    tenant_state.link_customer(settings.tenants_table, tenant_id, customer["id"])
    dynamo.update(
        settings.usage_table,
        usage_dal.counter_key(tenant_id, PERIOD, "queries", 0),
        set_="ADD used :n",
        vals={":n": 1005},
    )
    start, end = (int(t.timestamp()) for t in bounds(PERIOD))
    invoice, event = fake_stripe.state.add_draft_invoice(customer["id"], start, end)
    assert event is not None
    yield fake_stripe, tenant_id, invoice, event


@pytest.fixture
def admin_token(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("METERBRIDGE_ADMIN_TOKEN", ADMIN_TOKEN)
    yield


def link_subscription(tenant: Tenant) -> None:
    tenants_dal.update_tenant(
        get_settings().tenants_table,
        tenant.tenant_id,
        # As provisioning leaves it: the subscription linked, and a version for the admin API.
        fields={"stripe_subscription_id": tenant.subscription},
        if_absent={"version": 1},
    )
