"""Tenant lifecycle through the admin API: get/list/filter, plan change (Stripe and quotas
follow), suspend/resume, offboard; every change in the outbox and on the tenant's NATS subject."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from meterbridge.errors import TenantSuspended, Unauthorized
from meterbridge.logic.auth import authenticate
from meterbridge.settings import get_settings
from tests.support import tenants as helpers
from tests.support.builders import event_records
from tests.support.tenants import AUTH, FakeStripe, body, idem, price_key

# Fixtures shared with the other tenant tests (pytest finds them by these names).
admin = helpers.admin
fake_stripe = helpers.fake_stripe


def create_tenant(admin: TestClient, plan: str = "basic", name: str = "Acme") -> dict[str, Any]:
    resp = admin.post("/admin/tenants", json=body(plan=plan, name=name), headers=idem())
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_get_and_list_with_filters_and_pagination(admin: TestClient) -> None:
    # Given five tenants on two plans, one suspended
    ids = [
        create_tenant(admin, plan="free" if i % 2 else "basic")["tenant"]["tenant_id"]
        for i in range(5)
    ]
    admin.post(f"/admin/tenants/{ids[0]}/suspend", headers=AUTH)

    # When listing two at a time, filtering, and reading one
    pages, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = admin.get("/admin/tenants", params=params, headers=AUTH).json()
        pages.append(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    free = admin.get("/admin/tenants", params={"plan": "free"}, headers=AUTH).json()
    suspended = admin.get("/admin/tenants", params={"status": "suspended"}, headers=AUTH).json()
    one = admin.get(f"/admin/tenants/{ids[3]}", headers=AUTH)

    # Then every tenant is seen once, the filters hold, and one tenant reads back
    assert [t["tenant_id"] for p in pages for t in p] == ids
    assert all(len(p) <= 2 for p in pages)
    assert {t["tenant_id"] for t in free["items"]} == {ids[1], ids[3]}
    assert [t["tenant_id"] for t in suspended["items"]] == [ids[0]]
    assert one.status_code == 200 and one.json()["plan"] == "free"
    assert admin.get("/admin/tenants/t_0000000000000000", headers=AUTH).status_code == 404
    assert admin.get("/admin/tenants", params={"cursor": "zz"}, headers=AUTH).status_code == 400
    assert admin.get("/admin/tenants", params={"status": "odd"}, headers=AUTH).status_code == 400


def test_plan_change_moves_the_subscription_and_quotas_follow_at_once(
    admin: TestClient, fake_stripe: FakeStripe
) -> None:
    # Given a basic tenant whose key was just used (and cached)
    created = create_tenant(admin, plan="basic")
    tenant_id = created["tenant"]["tenant_id"]
    assert authenticate(created["api_key"]["secret"]).plan == "basic"

    # When the plan changes to pro, then to free
    pro = admin.patch(f"/admin/tenants/{tenant_id}", json={"plan": "pro"}, headers=AUTH)
    plan_now = authenticate(created["api_key"]["secret"]).plan
    free = admin.patch(f"/admin/tenants/{tenant_id}", json={"plan": "free"}, headers=AUTH)

    # Then Stripe's subscription moved to the pro price, then ended; auth saw pro at once
    assert pro.status_code == 200 and pro.json()["plan"] == "pro"
    assert plan_now == "pro"
    [subscription] = fake_stripe.state.subscriptions()
    assert price_key(subscription) == "meterbridge_pro"
    assert subscription["status"] == "canceled"
    assert free.json()["plan"] == "free" and free.json()["stripe_subscription_id"] is None
    assert authenticate(created["api_key"]["secret"]).plan == "free"


def test_plan_change_refuses_unknown_plans_and_fields(admin: TestClient) -> None:
    # Given a tenant
    tenant_id = create_tenant(admin)["tenant"]["tenant_id"]

    # When the plan is set to an unknown one, or an unknown field is sent
    unknown = admin.patch(f"/admin/tenants/{tenant_id}", json={"plan": "gold"}, headers=AUTH)
    extra = admin.patch(f"/admin/tenants/{tenant_id}", json={"status": "x"}, headers=AUTH)

    # Then 400 and the tenant is unchanged
    assert unknown.status_code == 400 and extra.status_code == 400
    assert admin.get(f"/admin/tenants/{tenant_id}", headers=AUTH).json()["plan"] == "basic"


def test_plan_change_fails_cleanly_when_stripe_fails_and_a_retry_succeeds(
    admin: TestClient, fake_stripe: FakeStripe
) -> None:
    # Given a basic tenant and Stripe failing the next subscription update
    tenant_id = create_tenant(admin)["tenant"]["tenant_id"]
    fake_stripe.state.inject_fault("POST", "/v1/subscriptions/", status=500)

    # When the plan change fails, then is retried
    failed = admin.patch(f"/admin/tenants/{tenant_id}", json={"plan": "pro"}, headers=AUTH)
    unchanged = admin.get(f"/admin/tenants/{tenant_id}", headers=AUTH).json()["plan"]
    retried = admin.patch(f"/admin/tenants/{tenant_id}", json={"plan": "pro"}, headers=AUTH)

    # Then the failure changed nothing and the retry moved both Stripe and the tenant
    assert failed.status_code == 502 and unchanged == "basic"
    assert retried.status_code == 200 and retried.json()["plan"] == "pro"
    [subscription] = fake_stripe.state.subscriptions()
    assert price_key(subscription) == "meterbridge_pro"


def test_suspend_refuses_usage_and_resume_restores_it(admin: TestClient) -> None:
    # Given an active tenant whose key works
    created = create_tenant(admin)
    tenant_id, secret = created["tenant"]["tenant_id"], created["api_key"]["secret"]
    authenticate(secret)

    # When suspended, then resumed
    suspended = admin.post(f"/admin/tenants/{tenant_id}/suspend", headers=AUTH)
    with pytest.raises(TenantSuspended):
        authenticate(secret)
    twice = admin.post(f"/admin/tenants/{tenant_id}/suspend", headers=AUTH)
    resumed = admin.post(f"/admin/tenants/{tenant_id}/resume", headers=AUTH)

    # Then the statuses follow and the key works again
    assert suspended.json()["status"] == "suspended" and twice.json()["status"] == "suspended"
    assert twice.json()["version"] == suspended.json()["version"]  # no second change
    assert resumed.json()["status"] == "active"
    assert authenticate(secret).tenant_id == tenant_id


def test_offboarding_revokes_keys_cancels_the_subscription_and_is_retryable(
    admin: TestClient, fake_stripe: FakeStripe
) -> None:
    # Given a paid tenant with two keys, and Stripe failing the first cancellation
    created = create_tenant(admin)
    tenant_id, secret = created["tenant"]["tenant_id"], created["api_key"]["secret"]
    second = admin.post(f"/admin/tenants/{tenant_id}/keys", headers=AUTH).json()["secret"]
    fake_stripe.state.inject_fault("DELETE", "/v1/subscriptions/", status=500)

    # When the operator offboards, gets an error, and retries
    failed = admin.delete(f"/admin/tenants/{tenant_id}", headers=AUTH)
    done = admin.delete(f"/admin/tenants/{tenant_id}", headers=AUTH)
    again = admin.delete(f"/admin/tenants/{tenant_id}", headers=AUTH)

    # Then the tenant is deleted with a retention date, keys are refused, Stripe is cancelled
    assert failed.status_code == 502
    assert done.status_code == 200 and done.json()["status"] == "deleted"
    assert done.json()["retain_until"] and again.json() == done.json()
    for key in (secret, second):
        with pytest.raises(Unauthorized):
            authenticate(key)
    [subscription] = fake_stripe.state.subscriptions()
    assert subscription["status"] == "canceled"
    keys = admin.get(f"/admin/tenants/{tenant_id}/keys", headers=AUTH).json()
    assert {k["status"] for k in keys} == {"revoked"}
    # And nothing more can happen to it
    assert admin.post(f"/admin/tenants/{tenant_id}/resume", headers=AUTH).status_code == 409
    assert admin.post(f"/admin/tenants/{tenant_id}/keys", headers=AUTH).status_code == 409


async def _read_subject(url: str, subject: str, count: int) -> list[dict[str, Any]]:
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=30)
        sub = await js.pull_subscribe(subject, durable="lifecycle-test")
        msgs = await sub.fetch(count, timeout=30)
        return [json.loads(m.data) for m in msgs]
    finally:
        await nc.close()


def test_every_lifecycle_change_reaches_the_outbox_and_the_tenant_subject(
    admin: TestClient, fake_stripe: FakeStripe, nats_server: Any
) -> None:
    # Given NATS is up (the nats_server fixture enabled publishing)
    # When a tenant goes through its whole life
    tenant_id = create_tenant(admin)["tenant"]["tenant_id"]
    admin.patch(f"/admin/tenants/{tenant_id}", json={"plan": "pro"}, headers=AUTH)
    admin.post(f"/admin/tenants/{tenant_id}/suspend", headers=AUTH)
    admin.post(f"/admin/tenants/{tenant_id}/resume", headers=AUTH)
    admin.delete(f"/admin/tenants/{tenant_id}", headers=AUTH)

    # Then the outbox holds one event per change, each marked published
    expected = [
        "tenant.provisioned",
        "tenant.plan_changed",
        "tenant.suspended",
        "tenant.resumed",
        "tenant.offboarded",
    ]
    items = [i for i in event_records(get_settings().events_table) if i.get("kind") == "tenant"]
    assert sorted(i["event_type"] for i in items) == sorted(expected)
    assert all(i["tenant_id"] == tenant_id for i in items)
    assert not any("republish_shard" in i for i in items)
    # And the tenant's subject carries the same CloudEvents in order
    subject = f"meterbridge.tenant.{tenant_id}.tenant"
    events = asyncio.run(_read_subject(nats_server.url, subject, len(expected)))
    assert [e["type"] for e in events] == expected
    assert all(e["subject"] == tenant_id and e["source"] == "//meterbridge/admin" for e in events)
    assert events[1]["data"]["from_plan"] == "basic" and events[1]["data"]["to_plan"] == "pro"
