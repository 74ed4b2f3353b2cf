"""The fake Stripe API, driven by the real ``stripe`` client over HTTP (uvicorn on loopback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import stripe

from meterbridge_dev.fakes.stripe_fake import (
    StripeState,
    create_app,
    sign_payload,
    webhook_request,
)
from meterbridge_dev.stack.servers import BackgroundServer

API_KEY = "sk_test_meterbridge"
WEBHOOK_SECRET = "whsec_test_secret"
SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture
def fake() -> Iterator[tuple[StripeState, stripe.StripeClient, str]]:
    state = StripeState(API_KEY, seed=3)
    with BackgroundServer(create_app(state)) as server:
        # max_network_retries=0: the client must not retry away the faults the tests inject.
        client = stripe.StripeClient(
            API_KEY, base_addresses={"api": server.url}, max_network_retries=0
        )
        yield state, client, server.url


def test_create_customer_twice_with_one_idempotency_key_makes_one_customer(fake):
    # Given
    state, client, _ = fake
    params = {"email": "ops@acme.test", "metadata": {"tenant_id": "t_acme"}}

    # When
    first = client.v1.customers.create(params, {"idempotency_key": "tenant-t_acme"})
    second = client.v1.customers.create(params, {"idempotency_key": "tenant-t_acme"})

    # Then
    assert first.id == second.id
    assert first.id.startswith("cus_") and first.object == "customer"
    assert first.metadata["tenant_id"] == "t_acme"
    assert len(state.customers()) == 1
    assert len(state.events("customer.created")) == 1
    assert state.idempotency_keys() == [
        ("POST", "/v1/customers", "tenant-t_acme"),
        ("POST", "/v1/customers", "tenant-t_acme"),
    ]


def test_same_idempotency_key_with_other_parameters_is_an_idempotency_error(fake):
    # Given
    state, client, _ = fake
    client.v1.customers.create({"email": "a@acme.test"}, {"idempotency_key": "k1"})

    # When
    with pytest.raises(stripe.IdempotencyError):
        client.v1.customers.create({"email": "b@acme.test"}, {"idempotency_key": "k1"})

    # Then
    assert len(state.customers()) == 1


def test_customer_retrieve_and_update_merges_metadata(fake):
    # Given
    state, client, _ = fake
    customer = client.v1.customers.create({"metadata": {"tenant_id": "t1", "plan": "free"}})

    # When
    client.v1.customers.update(customer.id, {"metadata": {"plan": "pro", "tenant_id": ""}})
    fetched = client.v1.customers.retrieve(customer.id)

    # Then
    assert fetched.metadata.to_dict() == {"plan": "pro"}
    assert (
        state.events("customer.updated")[0]["data"]["previous_attributes"]["metadata"]["plan"]
        == "free"
    )


def test_unknown_customer_is_a_stripe_invalid_request_error(fake):
    # Given
    _, client, _ = fake

    # When
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.customers.retrieve("cus_missing")

    # Then
    assert caught.value.http_status == 404
    assert caught.value.code == "resource_missing"


def test_subscription_lifecycle_create_update_price_cancel(fake):
    # Given
    state, client, _ = fake
    customer = client.v1.customers.create({"email": "ops@acme.test"})

    # When
    created = client.v1.subscriptions.create(
        {
            "customer": customer.id,
            "items": [{"price": "price_starter"}],
            "metadata": {"tenant_id": "t1"},
        }
    )
    fetched = client.v1.subscriptions.retrieve(created.id)
    item_id = fetched["items"].data[0].id
    updated = client.v1.subscriptions.update(
        created.id,
        {
            "items": [{"id": item_id, "price": "price_pro"}],
            "proration_behavior": "create_prorations",
        },
    )
    canceled = client.v1.subscriptions.cancel(created.id)

    # Then
    assert created.id.startswith("sub_") and created.status == "active"
    assert created.customer == customer.id
    assert fetched["items"].data[0].price.id == "price_starter"
    assert item_id.startswith("si_")
    assert fetched.current_period_end > fetched.current_period_start
    assert updated["items"].data[0].price.id == "price_pro"
    assert updated["items"].data[0].id == item_id
    assert canceled.status == "canceled"
    assert state.get_subscription(created.id)["status"] == "canceled"
    assert [e["type"] for e in state.events() if e["type"].startswith("customer.subscription")] == [
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
    ]
    update_event = state.events("customer.subscription.updated")[0]
    assert (
        update_event["data"]["previous_attributes"]["items"]["data"][0]["price"]["id"]
        == "price_starter"
    )
    assert state.requests()[-2]["params"]["proration_behavior"] == "create_prorations"


def test_list_events_filters_by_created_and_type_and_paginates(fake):
    # Given
    state, client, _ = fake
    since = int(time.time()) - 1
    state.add_event("invoice.paid", {"id": "in_old", "object": "invoice"}, created=since - 100)
    for i in range(3):
        client.v1.customers.create({"email": f"c{i}@acme.test"})
    state.add_event("invoice.paid", {"id": "in_1", "object": "invoice", "customer": "cus_x"})

    # When
    page = client.v1.events.list({"created": {"gte": since}, "limit": 2})
    rest = client.v1.events.list(
        {"created": {"gte": since}, "limit": 2, "starting_after": page.data[-1].id}
    )
    paid = client.v1.events.list({"type": "invoice.*"})
    one = client.v1.events.retrieve(paid.data[0].id)

    # Then
    assert page.object == "list" and page.url == "/v1/events" and page.has_more is True
    assert [e.type for e in page.data] == ["invoice.paid", "customer.created"]  # newest first
    assert len(rest.data) == 2 and rest.has_more is False
    assert [e.data.object.id for e in paid.data] == ["in_1", "in_old"]
    assert one.id.startswith("evt_") and one.livemode is False and one.api_version
    assert one.data.object.customer == "cus_x"


def test_injected_500_surfaces_as_a_stripe_error_and_creates_nothing(fake):
    # Given
    state, client, _ = fake
    state.inject_fault("POST", "/v1/customers", status=500)

    # When
    with pytest.raises(stripe.APIError) as caught:
        client.v1.customers.create({"email": "x@acme.test"})

    # Then
    assert caught.value.http_status == 500
    assert state.customers() == []
    assert client.v1.customers.create({"email": "x@acme.test"}).id.startswith("cus_")


def test_injected_402_over_control_endpoint_is_a_card_error(fake):
    # Given
    state, client, url = fake
    response = httpx.post(
        f"{url}/_control/faults",
        json={
            "faults": [
                {
                    "method": "POST",
                    "path_prefix": "/v1/subscriptions",
                    "status": 402,
                    "message": "Your card was declined.",
                }
            ]
        },
    )
    assert response.status_code == 200
    customer = client.v1.customers.create({})

    # When
    with pytest.raises(stripe.CardError) as caught:
        client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": "price_pro"}]})

    # Then
    assert caught.value.user_message == "Your card was declined."
    assert state.subscriptions() == []


def test_lost_response_fault_acts_and_a_retry_with_the_same_key_gets_the_stored_result(fake):
    # Given
    state, client, _ = fake
    state.inject_fault("POST", "/v1/customers", status=500, after_action=True)

    # When
    with pytest.raises(stripe.APIError):
        client.v1.customers.create({"email": "lost@acme.test"}, {"idempotency_key": "lost-1"})
    retried = client.v1.customers.create({"email": "lost@acme.test"}, {"idempotency_key": "lost-1"})

    # Then
    assert [c["id"] for c in state.customers()] == [retried.id]
    assert state.requests()[-1]["replayed"] is True


def test_client_retries_hide_a_single_injected_fault_when_enabled(fake):
    # Given
    state, _, url = fake
    retrying = stripe.StripeClient(API_KEY, base_addresses={"api": url}, max_network_retries=1)
    state.inject_fault("POST", "/v1/customers", status=503)

    # When
    customer = retrying.v1.customers.create({"email": "r@acme.test"})

    # Then
    assert customer.id.startswith("cus_")
    keys = [k for _, _, k in state.idempotency_keys()]
    assert len(keys) == 2 and keys[0] == keys[1]


def test_wrong_api_key_is_an_authentication_error(fake):
    # Given
    _, _, url = fake
    client = stripe.StripeClient(
        "sk_test_wrong", base_addresses={"api": url}, max_network_retries=0
    )

    # When
    with pytest.raises(stripe.AuthenticationError) as caught:
        client.v1.customers.create({})

    # Then
    assert caught.value.http_status == 401


def test_signed_webhook_verifies_with_the_real_stripe_library_and_tampering_fails(fake):
    # Given
    state, _, _ = fake
    event = state.add_event(
        "invoice.paid", {"id": "in_1", "object": "invoice", "amount_paid": 4900}
    )
    payload, headers = webhook_request(event, WEBHOOK_SECRET)

    # When
    verified = stripe.Webhook.construct_event(payload, headers["Stripe-Signature"], WEBHOOK_SECRET)
    direct = stripe.Webhook.construct_event(
        payload, sign_payload(payload, WEBHOOK_SECRET), WEBHOOK_SECRET
    )

    # Then
    assert verified.id == event["id"] and verified.type == "invoice.paid"
    assert direct.data.object.amount_paid == 4900
    tampered = payload.replace(b"4900", b"1")
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(
            tampered, sign_payload(payload, WEBHOOK_SECRET), WEBHOOK_SECRET
        )
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(
            payload, sign_payload(payload, "whsec_other"), WEBHOOK_SECRET
        )


def test_sign_payload_matches_stripes_own_signature_scheme():
    # Given
    payload = json.dumps({"id": "evt_1", "object": "event"})

    # When
    ours = sign_payload(payload.encode(), WEBHOOK_SECRET, timestamp=1_700_000_000)

    # Then
    assert ours == stripe.WebhookSignature.generate_signature_header(
        payload, WEBHOOK_SECRET, 1_700_000_000
    )


def test_events_added_over_the_control_endpoint_are_listed(fake):
    # Given
    _, client, url = fake

    # When
    added = httpx.post(
        f"{url}/_control/events",
        json={"type": "invoice.payment_failed", "object": {"id": "in_9", "object": "invoice"}},
    )
    listed = client.v1.events.list({"type": "invoice.payment_failed"})

    # Then
    assert added.status_code == 200
    assert [e.id for e in listed.data] == [added.json()["id"]]


def test_runs_as_a_separate_process_and_prints_its_url():
    # Given
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SHARED), str(SHARED.parent / "dev")])}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "meterbridge_dev.fakes.stripe_fake",
            "--port",
            "0",
            "--api-key",
            API_KEY,
        ],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        # When
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        url = line.removeprefix("listening on ")
        client = stripe.StripeClient(API_KEY, base_addresses={"api": url}, max_network_retries=0)
        customer = client.v1.customers.create({"email": "proc@acme.test"})

        # Then
        assert line.startswith("listening on http://127.0.0.1:")
        assert customer.id.startswith("cus_")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0
