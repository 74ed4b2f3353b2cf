"""``meterbridge stripe reconcile``: the real stripe client lists events from the loopback fake
Stripe API, and missed events are applied through the webhook's idempotent path."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import stripe
from typer.testing import CliRunner

from meterbridge.dal import tenant_state
from meterbridge.settings import get_settings
from meterbridge_dev.cli.main import app
from meterbridge_dev.fakes.stripe_fake import StripeState, create_app
from meterbridge_dev.stack.servers import BackgroundServer
from meterbridge_dev.stripe.reconcile import parse_since, reconcile_since
from tests.support.builders import make_tenant
from tests.support.fixtures import reset_singletons
from tests.support.webhooks import NEW_SECRET, deliver, stripe_event

API_KEY = "sk_test_reconcile_0123456789"


@pytest.fixture
def fake_stripe(
    aws: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[StripeState, stripe.StripeClient]]:
    state = StripeState(API_KEY)
    with BackgroundServer(create_app(state)) as server:
        monkeypatch.setenv("STRIPE_API_KEY", API_KEY)
        monkeypatch.setenv("STRIPE_API_BASE", server.url)
        monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", NEW_SECRET)
        reset_singletons()
        client = stripe.StripeClient(
            API_KEY,
            base_addresses={"api": server.url},
            http_client=stripe.HTTPXClient(allow_sync_methods=True),
        )
        yield state, client


def subscribed_tenant(client: stripe.StripeClient) -> tuple[str, str, str]:
    """A tenant with a Stripe customer and a basic subscription made through the real client."""
    tenant_id, _ = make_tenant(plan="free")
    customer = client.v1.customers.create(params={"metadata": {"tenant_id": tenant_id}})
    tenant_state.link_customer(get_settings().tenants_table, tenant_id, customer.id)
    subscription = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": "price_meterbridge_basic_monthly"}],
            "metadata": {"tenant_id": tenant_id},
        }
    )
    return tenant_id, customer.id, subscription.id


def test_reconcile_applies_missed_events_once_and_skips_delivered_ones(
    fake_stripe: tuple[StripeState, stripe.StripeClient],
) -> None:
    # Given a subscription whose created event the webhook never got, a failed payment it did
    # get, and a payment_failed event it missed
    state, client = fake_stripe
    tenant_id, customer, _ = subscribed_tenant(client)
    delivered = stripe_event(
        "invoice.payment_failed", customer=customer, created=int(time.time()) - 60
    )
    state.add_event(
        delivered["type"],
        delivered["data"]["object"],
        created=delivered["created"],
        event_id=delivered["id"],
    )
    assert deliver(delivered)[0] == 200
    missed = stripe_event("invoice.payment_failed", customer=customer)
    state.add_event(
        missed["type"], missed["data"]["object"], created=missed["created"], event_id=missed["id"]
    )
    # When reconcile runs over the last 30 days
    summary = reconcile_since(parse_since("30d"))
    # Then the missed ones are applied, the delivered one is already done, others ignored
    assert (summary.applied, summary.already_done, summary.failed) == (2, 1, 0)
    assert summary.ignored == summary.listed - 3
    profile = tenant_state.get_profile(get_settings().tenants_table, tenant_id)
    assert profile is not None
    assert (profile["plan"], profile["failed_payments"]) == ("basic", 2)
    # When it runs again
    again = reconcile_since(parse_since("30d"))
    # Then nothing is applied twice
    assert (again.applied, again.already_done) == (0, 3)


def test_reconcile_command_prints_a_summary(
    fake_stripe: tuple[StripeState, stripe.StripeClient],
) -> None:
    # Given a missed customer.subscription.created in the fake Stripe account
    _, client = fake_stripe
    subscribed_tenant(client)
    # When the operator runs the command
    result = CliRunner().invoke(app, ["stripe", "reconcile", "--since", "30d"])
    # Then it exits 0 and prints the summary
    assert result.exit_code == 0, result.output
    assert "applied 1" in result.output and "failed 0" in result.output


def test_reconcile_only_lists_the_window(
    fake_stripe: tuple[StripeState, stripe.StripeClient],
) -> None:
    # Given an event from two hours ago that was missed
    state, client = fake_stripe
    tenant_id, customer, _ = subscribed_tenant(client)
    old = stripe_event("invoice.payment_failed", customer=customer, created=int(time.time()) - 7200)
    state.add_event(old["type"], old["data"]["object"], created=old["created"], event_id=old["id"])
    # When reconcile looks back one hour only
    summary = reconcile_since(parse_since("1h"))
    # Then the old event is not applied
    profile = tenant_state.get_profile(get_settings().tenants_table, tenant_id)
    assert profile is not None and profile.get("failed_payments") is None
    assert summary.applied == 1
