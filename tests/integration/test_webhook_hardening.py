"""Stripe payloads the outside review sent (issue 18, items 6, 8, 9).

The webhook Lambda runs in-process against the moto server with payloads signed by Stripe's
scheme; the deep-nesting case also goes through the local stack's ``/stripe/webhook`` route
under uvicorn over a socket, to show the connection survives.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import stripe

from meterbridge.dal import tenant_state, webhooks
from meterbridge.settings import get_settings
from meterbridge_dev.stack.devapp import create_dev_app
from meterbridge_dev.stack.servers import BackgroundServer
from tests.support import webhooks as webhook_support
from tests.support.builders import make_tenant
from tests.support.webhooks import (
    NEW_SECRET,
    deliver,
    linked_tenant,
    outbox_item,
    profile,
    scan_all,
    stripe_event,
)

webhook_env = webhook_support.webhook_env  # the signing-secret fixture


def _deep(depth: int) -> str:
    """JSON text nested ``depth`` objects deep (Python's own encoder stops near 1,000)."""
    return '{"n": ' * depth + "1" + "}" * depth


def _thin_event() -> dict[str, Any]:
    """A thin event notification as an event destination sends it (Stripe's v2 shape)."""
    return {
        "id": "evt_test_65R9Ijk8dGTxPsH8IUtHvRY5bEzSQ6Ya2q2Tx8bHHFTI",
        "object": "v2.core.event",
        "type": "v1.billing.meter.error_report_triggered",
        "livemode": False,
        "created": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "related_object": {
            "id": "mtr_test_61R9IjkTXEv0a2LkV41IjZsRMnM0pEK0",
            "type": "billing.meter",
            "url": "/v1/billing/meters/mtr_test_61R9IjkTXEv0a2LkV41IjZsRMnM0pEK0",
        },
    }


# -- item 6: deep nesting ----------------------------------------------------------------------


@pytest.mark.parametrize("depth", [100, 900, 5000])
def test_a_signed_deeply_nested_body_is_a_clear_400_that_writes_nothing(
    webhook_env: dict[str, str], depth: int
) -> None:
    # Given a validly signed invoice.paid whose object hides a deeply nested value
    _, _, customer = linked_tenant()
    event = stripe_event("invoice.paid", customer=customer)
    event["data"]["object"]["metadata"] = {"deep": "DEEP"}
    body = json.dumps(event).replace('"DEEP"', _deep(depth))
    before = scan_all(webhook_env)
    # When it is delivered
    status, answer = deliver(body.encode())
    # Then a 400 naming the limit (never a 500), and no table changed
    assert status == 400, answer
    assert answer["error"]["code"] == "invalid_request"
    assert "nested" in answer["error"]["message"]
    assert scan_all(webhook_env) == before


@pytest.fixture
def dev_stack(aws: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", NEW_SECRET)
    from tests.support.fixtures import reset_singletons

    reset_singletons()
    with BackgroundServer(create_dev_app(), graceful_timeout=2.0) as server:
        yield server.url


def test_deep_nesting_over_http_answers_400_and_keeps_the_connection(dev_stack: str) -> None:
    # Given a signed body nested 20,000 levels deep (signed with stripe-python's own signer)
    envelope = {"id": "evt_deep", "object": "event", "type": "invoice.paid", "data": "DEEP"}
    body = json.dumps(envelope).replace('"DEEP"', _deep(20_000))
    signature = stripe.WebhookSignature.generate_signature_header(body, NEW_SECRET)
    with httpx.Client(base_url=dev_stack, timeout=30.0) as client:
        # When it is posted to the local stack's webhook route
        first = client.post(
            "/stripe/webhook", content=body, headers={"Stripe-Signature": signature}
        )
        # Then a clear 400, and the same connection still serves the next request
        assert first.status_code == 400, first.text
        assert "nested" in first.json()["error"]["message"]
        second = client.get("/health/live")
        assert second.status_code == 200
        assert first.extensions["network_stream"] is second.extensions["network_stream"]


# -- item 8: thin events, unknown shapes, Checkout modes, API versions ---------------------------


def test_a_thin_event_is_acknowledged_ignored_and_writes_nothing(
    webhook_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    # Given a thin event notification, as stripe-python itself parses it
    thin = _thin_event()
    notification = stripe.StripeClient("sk_test_x").parse_event_notification_without_verification(
        json.dumps(thin)
    )
    assert notification.object == "v2.core.event"
    before = scan_all(webhook_env)
    # When it is delivered, signed
    status, body = deliver(thin)
    # Then 200 "ignored" (Stripe would retry a 4xx for days), logged, nothing written
    assert (status, body["outcome"], body["id"]) == (200, "ignored", thin["id"])
    assert scan_all(webhook_env) == before
    assert any(
        r.getMessage() == "stripe event ignored" and getattr(r, "stripe_event_id", "") == thin["id"]
        for r in caplog.records
    ), caplog.records


def test_an_unknown_type_with_an_unexpected_shape_is_acknowledged(
    webhook_env: dict[str, str],
) -> None:
    # Given an event of a type meterbridge does not handle, with no data.object at all
    event = {
        "id": "evt_" + uuid.uuid4().hex,
        "object": "event",
        "type": "billing.alert.triggered",
        "api_version": stripe.api_version,
        "created": 1_780_000_000,
        "data": {"something": "else"},
    }
    before = scan_all(webhook_env)
    status, body = deliver(event)
    assert (status, body["outcome"]) == (200, "ignored")
    assert scan_all(webhook_env) == before


def test_reconcile_counts_an_unknown_shape_as_ignored_not_failed(
    webhook_env: dict[str, str],
) -> None:
    # Given a listed event of an unhandled type whose data has no object
    from meterbridge_dev.stripe.reconcile import reconcile

    odd = {"id": "evt_odd", "object": "event", "type": "billing.alert.triggered", "data": {}}
    # When reconciled / Then ignored, like the webhook, and nothing failed
    summary = reconcile([odd])
    assert (summary.ignored, summary.failed) == (1, 0)


@pytest.mark.parametrize("mode", ["payment", "setup"])
def test_a_checkout_that_is_not_subscription_mode_is_ignored(
    webhook_env: dict[str, str], mode: str
) -> None:
    # Given Stripe's checkout.session fixture in payment (or setup) mode, for an unlinked tenant
    tenant_id, _ = make_tenant(plan="free")
    event = stripe_event("checkout.session.completed", customer="cus_oneoff", tenant_id=tenant_id)
    event["data"]["object"].update(mode=mode, subscription=None)
    # When it is delivered
    status, body = deliver(event)
    # Then acknowledged as ignored: no subscription.started, no customer link
    assert (status, body["outcome"]) == (200, "ignored")
    assert "type" not in body
    assert outbox_item(event["id"]) is None
    assert profile(tenant_id).get("stripe_customer_id") is None


def test_the_api_version_is_logged_recorded_and_a_mismatch_is_flagged(
    webhook_env: dict[str, str],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # Given a payment event from an endpoint created with another API version
    _, _, customer = linked_tenant(plan="basic")
    event = stripe_event("invoice.payment_failed", customer=customer)
    event["api_version"] = "2024-06-20"
    # When it is delivered
    status, body = deliver(event)
    # Then it is applied (nothing refused silently), and the answer names both versions
    assert (status, body["outcome"]) == (200, "applied")
    assert body["api_version"] == "2024-06-20"
    assert body["expected_api_version"] == stripe.api_version
    # And the billing event and the webhook record carry the version
    cloud_event = json.loads(outbox_item(event["id"])["event"])
    assert cloud_event["data"]["stripe_api_version"] == "2024-06-20"
    record = webhooks.get(get_settings().idempotency_table, event["id"])
    assert record is not None and record["api_version"] == "2024-06-20"
    # And a warning names the versions
    [warning] = [r for r in caplog.records if "api_version differs" in r.getMessage()]
    assert warning.levelname == "WARNING"
    assert getattr(warning, "stripe_api_version", None) == "2024-06-20"
    assert getattr(warning, "expected_api_version", None) == stripe.api_version
    assert '"StripeApiVersionMismatch"' in capfd.readouterr().out  # the EMF metric


def test_the_pinned_api_version_is_recorded_without_a_warning(
    webhook_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    _, _, customer = linked_tenant(plan="basic")
    event = stripe_event("customer.subscription.updated", customer=customer)
    status, body = deliver(event)
    assert (status, body["api_version"]) == (200, stripe.api_version)
    assert "expected_api_version" not in body
    assert not [r for r in caplog.records if "api_version differs" in r.getMessage()]
    cloud_event = json.loads(outbox_item(event["id"])["event"])
    assert cloud_event["data"]["stripe_api_version"] == stripe.api_version


# -- item 9: tenant resolution -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["customer.subscription.updated", "invoice.payment_failed"])
def test_the_stored_customer_link_wins_over_metadata_naming_an_unlinked_tenant(
    webhook_env: dict[str, str], name: str
) -> None:
    # Given tenant A linked to the customer, and tenant B with no link at all
    tenant_a, _, customer = linked_tenant(plan="basic")
    tenant_b, _ = make_tenant(plan="basic")
    # When a signed event for A's customer carries metadata.tenant_id = B
    event = stripe_event(name, customer=customer, tenant_id=tenant_b)
    status, body = deliver(event)
    # Then it is A's event: A's state moved, B's did not
    assert (status, body["outcome"]) == (200, "applied")
    assert json.loads(outbox_item(event["id"])["event"])["subject"] == tenant_a
    b = profile(tenant_b)
    assert b.get("failed_payments", 0) == 0 and b.get("stripe_subscription") is None


def test_an_event_without_a_customer_cannot_reach_a_linked_tenant(
    webhook_env: dict[str, str],
) -> None:
    # Given tenant A linked to a customer
    tenant_a, _, customer = linked_tenant(plan="basic")
    # When a signed subscription event names A in metadata but carries no customer
    event = stripe_event("customer.subscription.updated", customer=customer, tenant_id=tenant_a)
    event["data"]["object"]["customer"] = None
    status, body = deliver(event)
    # Then it is unmatched: A's plan and subscription state are untouched
    assert (status, body["outcome"]) == (200, "unmatched")
    assert outbox_item(event["id"]) is None
    a = profile(tenant_a)
    assert a["plan"] == "basic" and a.get("stripe_subscription") is None


def test_metadata_naming_a_tenant_linked_to_another_customer_is_refused(
    webhook_env: dict[str, str],
) -> None:
    # Given tenant A linked to its customer, and an event for a customer nobody is linked to
    tenant_a, _, _ = linked_tenant(plan="basic")
    event = stripe_event("invoice.payment_failed", customer="cus_stranger", tenant_id=tenant_a)
    status, body = deliver(event)
    assert (status, body["outcome"]) == (200, "unmatched")
    assert profile(tenant_a).get("failed_payments", 0) == 0


def test_a_checkout_links_an_unlinked_tenant_named_by_metadata(webhook_env: dict[str, str]) -> None:
    # Given a tenant with no link and a subscription Checkout for a new customer
    tenant_id, _ = make_tenant(plan="free")
    event = stripe_event("checkout.session.completed", customer="cus_newlink", tenant_id=tenant_id)
    status, body = deliver(event)
    # Then (the rule still lets the first link happen)
    assert (status, body["outcome"], body["type"]) == (200, "applied", "subscription.started")
    found = tenant_state.find_by_customer(get_settings().tenants_table, "cus_newlink")
    assert found is not None and found["tenant_id"] == tenant_id


def test_a_bad_signature_on_a_deep_body_is_still_a_signature_error(
    webhook_env: dict[str, str],
) -> None:
    body = ('{"d": ' + _deep(5000) + "}").encode()
    status, answer = deliver(body, secret="whsec_wrong")
    assert (status, answer["error"]["code"]) == (400, "invalid_signature")
