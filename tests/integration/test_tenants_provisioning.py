"""POST /admin/tenants against the moto server and the fake Stripe API: one call provisions
everything; a failure at any step, then a retry with the same Idempotency-Key, ends with exactly
one tenant, customer, subscription and key; concurrent identical requests make one tenant."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from meterbridge.errors import StorageUnavailable
from meterbridge.settings import get_settings
from meterbridge_dev.stack.servers import BackgroundServer
from tests.support import tenants as helpers
from tests.support.tenants import AUTH, FakeStripe, body, idem, plain_items, price_key

# Fixtures shared with the other tenant tests (pytest finds them by these names).
admin = helpers.admin
fake_stripe = helpers.fake_stripe


def profiles() -> list[dict[str, Any]]:
    return [i for i in plain_items(get_settings().tenants_table) if i["sk"] == "PROFILE"]


def key_records() -> list[dict[str, Any]]:
    return [i for i in plain_items(get_settings().tenants_table) if i["sk"] == "KEY"]


def test_one_call_provisions_tenant_customer_subscription_and_key(
    admin: TestClient, fake_stripe: FakeStripe
) -> None:
    # Given an empty system and the fake Stripe API
    headers = idem()

    # When an operator creates a tenant on a paid plan
    resp = admin.post("/admin/tenants", json=body(plan="basic"), headers=headers)

    # Then tenant, customer, subscription and first key exist, and the secret is returned once
    assert resp.status_code == 201, resp.text
    out = resp.json()
    tenant, key = out["tenant"], out["api_key"]
    assert tenant["status"] == "active" and tenant["plan"] == "basic" and tenant["stripe"] == "ok"
    assert tenant["tenant_id"].startswith("t_") and len(tenant["tenant_id"]) == 18
    assert out["secret_included"] is True and key["secret"].startswith("mb_test_")
    assert key["prefix"] == key["secret"][:12]
    customers = fake_stripe.state.customers()
    assert [c["id"] for c in customers] == [tenant["stripe_customer_id"]]
    assert customers[0]["metadata"] == {"tenant_id": tenant["tenant_id"]}
    assert customers[0]["email"] == "billing@acme.example"
    subscriptions = fake_stripe.state.subscriptions()
    assert [s["id"] for s in subscriptions] == [tenant["stripe_subscription_id"]]
    assert price_key(subscriptions[0]) == "meterbridge_basic"
    keys_used = {k for _, _, k in fake_stripe.state.idempotency_keys()}
    assert keys_used == {
        f"mb-customer-{tenant['tenant_id']}",
        f"mb-subscription-{tenant['tenant_id']}",
    }
    # And the key authenticates on the usage API's path
    from meterbridge.logic.auth import authenticate

    principal = authenticate(key["secret"])
    assert (principal.tenant_id, principal.plan) == (tenant["tenant_id"], "basic")


def test_free_plan_has_a_customer_but_no_subscription(
    admin: TestClient, fake_stripe: FakeStripe
) -> None:
    # Given the free plan, which has no Stripe price
    # When a tenant is created on it
    resp = admin.post("/admin/tenants", json=body(plan="free"), headers=idem())

    # Then there is a Stripe customer and no subscription
    assert resp.status_code == 201, resp.text
    assert resp.json()["tenant"]["stripe_subscription_id"] is None
    assert len(fake_stripe.state.customers()) == 1
    assert fake_stripe.state.subscriptions() == []


FAULTS = {
    "customer_fails": ("POST", "/v1/customers", False),
    "customer_response_lost": ("POST", "/v1/customers", True),
    "subscription_fails": ("POST", "/v1/subscriptions", False),
    "subscription_response_lost": ("POST", "/v1/subscriptions", True),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_stripe_failure_at_each_step_then_retry_makes_exactly_one_of_each(
    admin: TestClient, fake_stripe: FakeStripe, fault: str
) -> None:
    # Given Stripe fails once at one step (after acting, for the lost-response cases)
    method, path, after_action = FAULTS[fault]
    fake_stripe.state.inject_fault(method, path, status=500, after_action=after_action)
    headers = idem()

    # When the operator creates a tenant, gets an error, and retries with the same key
    first = admin.post("/admin/tenants", json=body(), headers=headers)
    second = admin.post("/admin/tenants", json=body(), headers=headers)
    third = admin.post("/admin/tenants", json=body(), headers=headers)

    # Then the first call failed clearly and the retry finished the job
    assert first.status_code == 502, first.text
    assert first.json()["error"]["code"] == "upstream_unavailable"
    assert second.status_code == 201, second.text
    assert second.json()["secret_included"] is True
    # And exactly one of each exists
    tenant_id = second.json()["tenant"]["tenant_id"]
    assert [p["tenant_id"] for p in profiles()] == [tenant_id]
    assert len(fake_stripe.state.customers()) == 1
    assert len(fake_stripe.state.subscriptions()) == 1
    assert [k["tenant_id"] for k in key_records()] == [tenant_id]
    # And a later retry replays the result without the secret
    assert third.status_code == 200
    assert third.json()["replayed"] is True and third.json()["secret_included"] is False
    assert "secret" not in third.json()["api_key"]
    assert third.json()["api_key"]["key_id"] == second.json()["api_key"]["key_id"]


def test_failure_at_the_key_step_then_retry_makes_exactly_one_key(
    admin: TestClient, fake_stripe: FakeStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given DynamoDB refuses the final transaction (key, activation, outbox) once
    from meterbridge.dal import tenants as tenants_dal

    real = tenants_dal.transact_write
    calls = {"n": 0}

    def flaky(ops: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise StorageUnavailable("injected: storage is busy")
        real(ops)

    monkeypatch.setattr(tenants_dal, "transact_write", flaky)
    headers = idem()

    # When the operator creates the tenant and retries
    first = admin.post("/admin/tenants", json=body(), headers=headers)
    second = admin.post("/admin/tenants", json=body(), headers=headers)

    # Then nothing was half-written and the retry issued exactly one key
    assert first.status_code == 503
    assert second.status_code == 201, second.text
    assert len(profiles()) == 1 and profiles()[0]["status"] == "active"
    assert len(key_records()) == 1
    assert len(fake_stripe.state.customers()) == 1
    assert len(fake_stripe.state.subscriptions()) == 1


def test_same_idempotency_key_with_another_body_is_refused(
    admin: TestClient, fake_stripe: FakeStripe
) -> None:
    # Given a completed provisioning
    headers = idem()
    assert admin.post("/admin/tenants", json=body(), headers=headers).status_code == 201

    # When the same key comes with a different body
    resp = admin.post("/admin/tenants", json=body(name="Other Corp"), headers=headers)

    # Then it is refused and nothing new is created
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "idempotency_key_reused"
    assert len(profiles()) == 1 and len(fake_stripe.state.customers()) == 1


def test_missing_idempotency_key_is_a_400(admin: TestClient) -> None:
    # Given / When a create without an Idempotency-Key
    resp = admin.post("/admin/tenants", json=body(), headers=AUTH)

    # Then 400 and nothing is written
    assert resp.status_code == 400
    assert "Idempotency-Key" in resp.json()["error"]["message"]
    assert profiles() == []


@pytest.mark.parametrize(
    "bad",
    [
        body(plan="platinum"),
        body(email="not-an-email"),
        body(email="a@b"),
        body(name=""),
        body(name="x" * 201),
        body(extra_field=1),
        {"name": "Acme", "plan": "basic"},
    ],
    ids=[
        "unknown-plan",
        "bad-email",
        "email-no-tld",
        "empty-name",
        "long-name",
        "unknown-field",
        "missing-email",
    ],
)
def test_bad_input_gets_a_400_and_changes_nothing(
    admin: TestClient, fake_stripe: FakeStripe, bad: dict[str, Any]
) -> None:
    # Given / When a create with bad input
    resp = admin.post("/admin/tenants", json=bad, headers=idem())

    # Then a clear 400 and nothing anywhere
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == "invalid_request"
    assert resp.json()["error"]["details"]
    assert plain_items(get_settings().tenants_table) == []
    assert fake_stripe.state.customers() == []


def test_stripe_is_skipped_with_a_warning_when_no_key_is_set(
    admin: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    # Given STRIPE_API_KEY is empty (the default)
    # When a tenant is created
    resp = admin.post("/admin/tenants", json=body(), headers=idem())

    # Then it is provisioned without Stripe, the tenant says so, and a warning was logged
    assert resp.status_code == 201, resp.text
    assert resp.json()["tenant"]["stripe"] == "skipped"
    assert resp.json()["tenant"]["stripe_customer_id"] is None
    assert any("stripe skipped" in r.getMessage() for r in caplog.records)


def test_ten_concurrent_identical_requests_make_one_tenant(
    aws: dict[str, str], fake_stripe: FakeStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the admin API served by uvicorn
    from meterbridge.api.admin import create_app
    from tests.support.fixtures import reset_singletons
    from tests.support.tenants import ADMIN_TOKEN

    monkeypatch.setenv("METERBRIDGE_ADMIN_TOKEN", ADMIN_TOKEN)
    reset_singletons()
    headers = idem()
    start = threading.Barrier(10)

    def create(_: int) -> httpx.Response:
        start.wait(timeout=10)
        return httpx.post(f"{url}/admin/tenants", json=body(), headers=headers, timeout=30)

    # When 10 identical requests arrive at once
    with BackgroundServer(create_app()) as server:
        url = server.url
        with ThreadPoolExecutor(max_workers=10) as pool:
            responses = list(pool.map(create, range(10)))

    # Then exactly one tenant, customer, subscription and key exist
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 201, 409}, statuses
    assert statuses.count(201) == 1
    created = [r.json() for r in responses if r.status_code in (200, 201)]
    assert len({c["tenant"]["tenant_id"] for c in created}) == 1
    assert sum(1 for c in created if c["secret_included"]) == 1
    assert len(profiles()) == 1
    assert len(fake_stripe.state.customers()) == 1
    assert len(fake_stripe.state.subscriptions()) == 1
    assert len(key_records()) == 1
    # And any request that had to wait was told to retry
    for r in responses:
        if r.status_code == 409:
            assert r.json()["error"]["code"] == "provisioning_in_progress"
            assert r.headers["Retry-After"]


def test_admin_routes_refuse_requests_without_the_admin_token(admin: TestClient) -> None:
    # Given / When admin routes are called without, and with a wrong, token
    missing = admin.post("/admin/tenants", json=body(), headers={"Idempotency-Key": "k-12345678"})
    wrong = admin.get("/admin/tenants", headers={"Authorization": "Bearer nope"})
    listing = admin.get("/admin/tenants/t_0123456789abcdef/keys")

    # Then 401 each time and nothing written
    assert [missing.status_code, wrong.status_code, listing.status_code] == [401, 401, 401]
    assert missing.json()["error"]["code"] == "unauthorized"
    assert profiles() == []
