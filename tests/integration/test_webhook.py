"""The Stripe webhook Lambda, invoked in-process against the moto server, with payloads signed
by Stripe's real scheme (the verification is never patched)."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from meterbridge.dal import outbox, tenant_state, webhooks
from meterbridge.errors import TenantSuspended
from meterbridge.logic import auth
from meterbridge.logic.stripe import apply as stripe_apply
from meterbridge.logic.stripe.apply import apply_state, process
from meterbridge.logic.stripe.translate import translate
from meterbridge.models.cloudevent import STRIPE_SOURCE
from meterbridge.models.stripe import StripeEvent
from meterbridge.settings import get_settings
from meterbridge_dev.fakes.stripe_fake import sign_payload
from tests.support import webhooks as webhook_support
from tests.support.builders import make_tenant
from tests.support.fixtures import reset_singletons
from tests.support.webhooks import (
    NEW_SECRET,
    OLD_SECRET,
    body_of,
    deliver,
    function_url_event,
    invoke,
    linked_tenant,
    outbox_item,
    profile,
    scan_all,
    stripe_event,
)

webhook_env = webhook_support.webhook_env  # the signing-secret fixture

BASE_T = 1_780_000_000


def assert_enqueued_once(env: dict[str, str], event_id: str) -> None:
    """The events table holds the event's record, and its stream queued it once for OpenMeter."""
    from tests.support.builders import stream_queued

    items = scan_all(env)[env["EventsTable"]]
    records = [i for i in items if i["sk"] == outbox.EVENT_SK]
    assert [i["pk"] for i in records] == [outbox.event_pk(STRIPE_SOURCE, event_id)]
    queued = stream_queued(env["EventsTable"])
    assert [json.loads(q.event)["id"] for q in queued] == [event_id]
    assert [q.pk for q in queued] == [records[0]["pk"]]


# -- translations and state ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "billing_type"),
    [
        ("customer.subscription.created", "subscription.started"),
        ("customer.subscription.updated", "subscription.updated"),
        ("customer.subscription.deleted", "subscription.ended"),
        ("invoice.paid", "payment.success"),
        ("invoice.payment_failed", "payment.failed"),
    ],
)
def test_each_type_is_translated_into_the_outbox_and_changes_state(
    webhook_env: dict[str, str], name: str, billing_type: str
) -> None:
    # Given a basic-plan tenant linked to a Stripe customer (found through the customer index)
    tenant_id, _, customer = linked_tenant(plan="basic")
    event = stripe_event(name, customer=customer)
    # When Stripe delivers the event
    status, body = deliver(event)
    # Then it is acknowledged, its CloudEvent is in the outbox, and the tenant state moved
    assert (status, body["outcome"], body["type"]) == (200, "applied", billing_type)
    item = outbox_item(event["id"])
    assert item is not None and item["kind"] == "billing" and item["tenant_id"] == tenant_id
    cloud_event = json.loads(item["event"])
    assert cloud_event["type"] == billing_type
    assert cloud_event["subject"] == tenant_id and cloud_event["source"] == STRIPE_SOURCE
    assert cloud_event["data"]["customer"] == customer
    state = profile(tenant_id)
    state["subscription_status"] = state.get("stripe_subscription", {}).get("status")
    expected = {
        "customer.subscription.created": {"plan": "basic", "subscription_status": "active"},
        "customer.subscription.updated": {"plan": "pro", "subscription_status": "active"},
        "customer.subscription.deleted": {"plan": "free", "subscription_status": "canceled"},
        "invoice.paid": {"failed_payments": 0, "payments_reset_at": event["created"]},
        "invoice.payment_failed": {"failed_payments": 1, "status": "active"},
    }[name]
    assert {k: state.get(k) for k in expected} == expected


def test_checkout_completed_links_the_customer_named_by_the_session(
    webhook_env: dict[str, str],
) -> None:
    # Given a tenant with no Stripe customer yet, and a Checkout whose reference is the tenant
    tenant_id, _ = make_tenant(plan="free")
    event = stripe_event(
        "checkout.session.completed", customer="cus_checkout1", tenant_id=tenant_id
    )
    # When Stripe delivers checkout.session.completed
    status, body = deliver(event)
    # Then subscription.started is in the outbox and the customer is linked to the tenant
    assert (status, body["type"]) == (200, "subscription.started")
    assert json.loads(outbox_item(event["id"])["event"])["data"]["checkout_session"]
    assert profile(tenant_id)["stripe_customer_id"] == "cus_checkout1"
    found = tenant_state.find_by_customer(get_settings().tenants_table, "cus_checkout1")
    assert found is not None and found["tenant_id"] == tenant_id


def test_an_ignored_type_is_acknowledged_and_writes_nothing(webhook_env: dict[str, str]) -> None:
    # Given a linked tenant and a customer.updated event (not translated)
    _, _, customer = linked_tenant()
    before = scan_all(webhook_env)
    event = stripe_event("customer.updated", customer=customer)
    # When it is delivered
    status, body = deliver(event)
    # Then 200 "ignored", and no table changed
    assert (status, body["outcome"]) == (200, "ignored")
    assert scan_all(webhook_env) == before


def test_an_unknown_customer_is_acknowledged_then_applied_once_linked(
    webhook_env: dict[str, str],
) -> None:
    # Given an invoice.payment_failed for a customer no tenant is linked to
    event = stripe_event("invoice.payment_failed", customer="cus_nobody")
    # When it is delivered
    status, body = deliver(event)
    # Then it is acknowledged as unmatched with no outbox item
    assert (status, body["outcome"]) == (200, "unmatched")
    assert outbox_item(event["id"]) is None
    # When the customer is linked and the event is applied again (reconcile or redelivery)
    tenant_id, _, _ = linked_tenant(customer="cus_nobody")
    status, body = deliver(event)
    # Then it is applied, once
    assert (status, body["outcome"]) == (200, "applied")
    assert profile(tenant_id)["failed_payments"] == 1


def test_an_unknown_customers_subscription_event_is_unmatched_then_applied_once_linked(
    webhook_env: dict[str, str],
) -> None:
    # Given a customer.subscription.updated for a customer no tenant is linked to
    event = stripe_event("customer.subscription.updated", customer="cus_nobody2")
    # When it is delivered
    status, body = deliver(event)
    # Then it is acknowledged as unmatched, recorded for operators, with no outbox item
    assert (status, body["outcome"]) == (200, "unmatched")
    record = webhooks.get(get_settings().idempotency_table, event["id"])
    assert record is not None and record["state"] == "unmatched"
    assert outbox_item(event["id"]) is None
    # When the customer is linked and the event comes again
    tenant_id, _, _ = linked_tenant(plan="basic", customer="cus_nobody2")
    status, body = deliver(event)
    # Then it is applied
    assert (status, body["outcome"]) == (200, "applied")
    assert profile(tenant_id)["plan"] == "pro" and outbox_item(event["id"]) is not None


# -- exactly once ----------------------------------------------------------------------------


def test_one_event_delivered_ten_times_concurrently_has_one_effect_and_ten_2xx(
    webhook_env: dict[str, str],
) -> None:
    # Given a linked tenant and one invoice.payment_failed event (its effect is countable)
    tenant_id, _, customer = linked_tenant(plan="basic")
    event = stripe_event("invoice.payment_failed", customer=customer)
    body = body_of(event)
    lambda_events = [
        function_url_event(body, sign_payload(body, NEW_SECRET), b64=(i % 2 == 0))
        for i in range(10)
    ]
    # When the ten deliveries run at once (half of them base64-encoded by the Function URL)
    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(invoke, lambda_events))
    # Then all ten get a 2xx, exactly one applied it, and the effect happened once
    assert [status for status, _ in results] == [200] * 10
    outcomes = sorted(b["outcome"] for _, b in results)
    assert outcomes == ["applied"] + ["duplicate"] * 9
    assert profile(tenant_id)["failed_payments"] == 1
    assert_enqueued_once(webhook_env, event["id"])


def test_a_subscription_event_delivered_ten_times_concurrently_has_one_effect(
    webhook_env: dict[str, str],
) -> None:
    # Given a linked basic tenant and one customer.subscription.updated (lock-free path)
    tenant_id, _, customer = linked_tenant(plan="basic")
    event = stripe_event("customer.subscription.updated", customer=customer)
    body = body_of(event)
    lambda_events = [function_url_event(body, sign_payload(body, NEW_SECRET)) for _ in range(10)]
    # When the ten deliveries run at once
    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(invoke, lambda_events))
    # Then all ten get a 2xx, each either applied or saw it durable, and one event is enqueued
    assert [status for status, _ in results] == [200] * 10
    outcomes = [b["outcome"] for _, b in results]
    assert set(outcomes) <= {"applied", "duplicate"} and "applied" in outcomes
    assert_enqueued_once(webhook_env, event["id"])
    assert profile(tenant_id)["plan"] == "pro"


def test_a_subscription_redelivery_is_a_duplicate_that_writes_nothing(
    webhook_env: dict[str, str],
) -> None:
    # Given a customer.subscription.updated already applied
    _tenant_id, _, customer = linked_tenant(plan="basic")
    event = stripe_event("customer.subscription.updated", customer=customer)
    assert deliver(event)[1]["outcome"] == "applied"
    before = scan_all(webhook_env)
    # When Stripe delivers it again
    status, body = deliver(event, timestamp=int(time.time()) + 1)
    # Then 200 duplicate and no table changed
    assert (status, body["outcome"]) == (200, "duplicate")
    assert scan_all(webhook_env) == before


@pytest.mark.parametrize("done_before_crash", ["outbox", "state"])
def test_a_subscription_event_half_done_before_a_crash_completes_on_redelivery(
    webhook_env: dict[str, str], done_before_crash: str
) -> None:
    # Given a customer.subscription.updated of which only one of the two writes happened
    tenant_id, _, customer = linked_tenant(plan="basic")
    event = stripe_event("customer.subscription.updated", customer=customer)
    settings = get_settings()
    change = translate(StripeEvent.model_validate(event))
    assert change is not None
    if done_before_crash == "outbox":
        outbox.enqueue(
            settings.events_table,
            change.cloud_event(tenant_id),
            tenant_id=tenant_id,
            kind="billing",
        )
    else:
        assert apply_state(change, tenant_id, settings)
    # When Stripe redelivers it
    status, body = deliver(event)
    # Then it is acknowledged and both effects exist, once
    assert (status, body["outcome"]) == (200, "applied")
    assert profile(tenant_id)["plan"] == "pro"
    assert_enqueued_once(webhook_env, event["id"])


def test_an_older_subscription_event_is_enqueued_without_changing_state(
    webhook_env: dict[str, str],
) -> None:
    # Given a tenant whose subscription state came from an event at T+60 (pro)
    tenant_id, _, customer = linked_tenant(plan="free")
    newer = stripe_event("customer.subscription.updated", customer=customer, created=BASE_T + 60)
    assert deliver(newer)[1]["outcome"] == "applied"
    # When an older deletion of the same subscription arrives
    older = stripe_event("customer.subscription.deleted", customer=customer, created=BASE_T)
    status, body = deliver(older)
    # Then it is recorded in the outbox (billing history) but the state stays the newer one
    assert (status, body["outcome"]) == (200, "applied")
    assert outbox_item(older["id"]) is not None
    assert profile(tenant_id)["plan"] == "pro"


def test_an_older_event_read_before_a_newer_state_landed_is_still_enqueued(
    webhook_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a profile read taken before a newer subscription state landed (a race: the older
    # event's transaction is then cancelled by the ordering guard)
    tenant_id, _, customer = linked_tenant(plan="free")
    stale_read = profile(tenant_id)
    newer = stripe_event("customer.subscription.updated", customer=customer, created=BASE_T + 60)
    assert deliver(newer)[1]["outcome"] == "applied"
    older = stripe_event("customer.subscription.deleted", customer=customer, created=BASE_T)
    monkeypatch.setattr(stripe_apply, "resolve_profile", lambda change, settings: stale_read)
    # When the older event is processed with that read
    result = process(StripeEvent.model_validate(older))
    # Then it is still enqueued (and would be published), and the newer state stands
    assert result.outcome == "applied" and result.cloud_event is not None
    assert outbox_item(older["id"]) is not None
    state = profile(tenant_id)
    assert (state["plan"], state["stripe_subscription"]["event"]) == ("pro", newer["id"])


def test_a_sequential_redelivery_is_acknowledged_without_side_effects(
    webhook_env: dict[str, str],
) -> None:
    # Given an event already applied
    _tenant_id, _, customer = linked_tenant(plan="basic")
    event = stripe_event("invoice.payment_failed", customer=customer)
    assert deliver(event)[0] == 200
    before = scan_all(webhook_env)
    # When Stripe delivers it again (a retry, signed anew)
    status, body = deliver(event, timestamp=int(time.time()) + 1)
    # Then 200 duplicate and no table changed
    assert (status, body["outcome"]) == (200, "duplicate")
    assert scan_all(webhook_env) == before


def test_a_lambda_that_died_mid_event_leaves_a_lock_that_expires(
    webhook_env: dict[str, str],
) -> None:
    # Given a delivery whose Lambda timed out: its lock was taken two minutes ago, never released
    tenant_id, _, customer = linked_tenant(plan="basic")
    event = stripe_event("invoice.payment_failed", customer=customer)
    table = get_settings().idempotency_table
    assert webhooks.claim(table, event["id"], event["type"], now=time.time() - 120).claimed
    # When Stripe redelivers it
    status, body = deliver(event)
    # Then the expired lock is taken over and the work is done once
    assert (status, body["outcome"]) == (200, "applied")
    assert profile(tenant_id)["failed_payments"] == 1
    record = webhooks.get(table, event["id"])
    assert record is not None and record["state"] == "done"
    assert record["expires_at"] >= time.time() + 3 * 24 * 3600


def test_a_live_lock_makes_a_duplicate_wait_then_answer_409(webhook_env: dict[str, str]) -> None:
    # Given a delivery in flight (its lock is live and it has not finished)
    tenant_id, _, customer = linked_tenant(plan="basic")
    event = stripe_event("invoice.payment_failed", customer=customer)
    table = get_settings().idempotency_table
    assert webhooks.claim(table, event["id"], event["type"]).claimed
    # When a duplicate arrives and the first never finishes within the wait
    result = process(StripeEvent.model_validate(event), wait_s=0.2)
    # Then it is not acknowledged (Stripe retries) and nothing was applied twice
    assert result.http()[0] == 409
    assert profile(tenant_id).get("failed_payments") is None


def test_a_crash_after_a_partial_effect_completes_once_on_redelivery(
    webhook_env: dict[str, str],
) -> None:
    # Given a payment_failed whose count and outbox writes happened, then the Lambda died
    tenant_id, _, customer = linked_tenant(plan="basic")
    event = stripe_event("invoice.payment_failed", customer=customer)
    settings = get_settings()
    tenant_state.count_failed_payment(
        settings.tenants_table, tenant_id, at=event["created"], event_id=event["id"]
    )
    # When Stripe redelivers it
    status, body = deliver(event)
    # Then it completes: one outbox item, the count still 1
    assert (status, body["outcome"]) == (200, "applied")
    assert outbox_item(event["id"]) is not None
    assert profile(tenant_id)["failed_payments"] == 1


# -- ordering --------------------------------------------------------------------------------


def test_updated_before_created_ends_in_the_updated_state(webhook_env: dict[str, str]) -> None:
    # Given a subscription created on basic at T, then updated to pro at T+60
    tenant_id, _, customer = linked_tenant(plan="free")
    created = stripe_event("customer.subscription.created", customer=customer, created=BASE_T)
    updated = stripe_event("customer.subscription.updated", customer=customer, created=BASE_T + 60)
    # When Stripe delivers updated first, then created
    assert deliver(updated)[0] == 200
    assert deliver(created)[0] == 200
    # Then the tenant is on pro, and both CloudEvents are in the outbox
    state = profile(tenant_id)
    assert (state["plan"], state["stripe_subscription"]["at"]) == ("pro", BASE_T + 60)
    assert outbox_item(created["id"]) and outbox_item(updated["id"])


def test_same_second_created_and_deleted_in_any_order_end_canceled(
    webhook_env: dict[str, str],
) -> None:
    # Given created and deleted of one subscription within the same second
    tenant_id, _, customer = linked_tenant(plan="basic")
    created = stripe_event("customer.subscription.created", customer=customer, created=BASE_T)
    deleted = stripe_event("customer.subscription.deleted", customer=customer, created=BASE_T)
    # When deleted arrives first
    deliver(deleted)
    deliver(created)
    # Then the later lifecycle step wins the tie: the tenant is back on free
    state = profile(tenant_id)
    assert (state["plan"], state["stripe_subscription"]["status"]) == ("free", "canceled")


def test_the_end_of_a_replaced_subscription_does_not_downgrade(
    webhook_env: dict[str, str],
) -> None:
    # Given a tenant whose current subscription is sub_new (pro)
    tenant_id, _, customer = linked_tenant(plan="free")
    current = stripe_event("customer.subscription.updated", customer=customer, created=BASE_T)
    current["data"]["object"]["id"] = "sub_new"
    deliver(current)
    # When the deletion of an older subscription arrives later
    old_end = stripe_event("customer.subscription.deleted", customer=customer, created=BASE_T + 10)
    old_end["data"]["object"]["id"] = "sub_old"
    status, _ = deliver(old_end)
    # Then it is acknowledged and the tenant stays on pro
    assert status == 200
    assert profile(tenant_id)["plan"] == "pro"


def test_a_failure_older_than_the_last_payment_is_not_counted(
    webhook_env: dict[str, str],
) -> None:
    # Given a payment at T+100
    tenant_id, _, customer = linked_tenant(plan="basic")
    deliver(stripe_event("invoice.paid", customer=customer, created=BASE_T + 100))
    # When a failure from T arrives late
    deliver(stripe_event("invoice.payment_failed", customer=customer, created=BASE_T))
    # Then it does not count
    assert profile(tenant_id)["failed_payments"] == 0


# -- suspension ------------------------------------------------------------------------------


def test_three_failed_payments_suspend_and_invoice_paid_resumes(
    webhook_env: dict[str, str],
) -> None:
    # Given an active tenant whose key works
    tenant_id, raw_key, customer = linked_tenant(plan="basic")
    assert auth.authenticate(raw_key).status == "active"
    # When three payments fail (one of them delivered twice)
    failures = [
        stripe_event("invoice.payment_failed", customer=customer, created=BASE_T + i)
        for i in range(3)
    ]
    deliver(failures[0])
    deliver(failures[1])
    deliver(failures[1], timestamp=int(time.time()) + 1)
    assert profile(tenant_id)["status"] == "active"
    deliver(failures[2])
    # Then the tenant is suspended and its key answers 403
    state = profile(tenant_id)
    assert (state["status"], state["failed_payments"]) == ("suspended", 3)
    with pytest.raises(TenantSuspended):
        auth.authenticate(raw_key)
    # When the invoice is paid
    status, body = deliver(stripe_event("invoice.paid", customer=customer, created=BASE_T + 10))
    # Then the tenant is active again with a reset count, and its key works
    assert (status, body["type"]) == (200, "payment.success")
    state = profile(tenant_id)
    assert (state["status"], state["failed_payments"]) == ("active", 0)
    assert auth.authenticate(raw_key).tenant_id == tenant_id


def test_a_crash_between_the_third_count_and_the_suspension_suspends_on_redelivery(
    webhook_env: dict[str, str],
) -> None:
    # Given three failures counted, the third by a Lambda that died before suspending
    tenant_id, _, customer = linked_tenant(plan="basic")
    failures = [
        stripe_event("invoice.payment_failed", customer=customer, created=BASE_T + i)
        for i in range(3)
    ]
    deliver(failures[0])
    deliver(failures[1])
    tenant_state.count_failed_payment(
        get_settings().tenants_table,
        tenant_id,
        at=failures[2]["created"],
        event_id=failures[2]["id"],
    )
    assert profile(tenant_id)["status"] == "active"
    # When Stripe redelivers the third failure
    status, body = deliver(failures[2])
    # Then the count stays three and the tenant is suspended
    assert (status, body["outcome"]) == (200, "applied")
    state = profile(tenant_id)
    assert (state["status"], state["failed_payments"]) == ("suspended", 3)


def test_a_payment_does_not_lift_an_operator_suspension(webhook_env: dict[str, str]) -> None:
    # Given a tenant the operator suspended
    tenant_id, _ = make_tenant(plan="basic", status="suspended")
    tenant_state.link_customer(get_settings().tenants_table, tenant_id, "cus_opsusp")
    # When an invoice is paid
    deliver(stripe_event("invoice.paid", customer="cus_opsusp"))
    # Then the tenant stays suspended
    assert profile(tenant_id)["status"] == "suspended"


# -- signatures ------------------------------------------------------------------------------


def _tamper(body: bytes) -> bytes:
    i = body.index(b'"amount_due": ') + len(b'"amount_due": ')
    return body[:i] + (b"8" if body[i : i + 1] != b"8" else b"7") + body[i + 1 :]


@pytest.mark.parametrize(
    "case", ["forged", "one_byte_tampered", "stale", "future", "missing", "garbage"]
)
def test_bad_signatures_get_400_and_write_nothing(webhook_env: dict[str, str], case: str) -> None:
    # Given a linked tenant and a payment_failed event
    _, _, customer = linked_tenant(plan="basic")
    event = stripe_event("invoice.payment_failed", customer=customer)
    body = body_of(event)
    now = int(time.time())
    before = scan_all(webhook_env)
    signature: str | None = {
        "forged": sign_payload(body, "whsec_attacker"),
        "one_byte_tampered": sign_payload(body, NEW_SECRET),
        "stale": sign_payload(body, NEW_SECRET, now - 301),
        # Far enough ahead to stay outside the 300 s tolerance however slowly the test runs
        "future": sign_payload(body, NEW_SECRET, now + 600),
        "missing": None,
        "garbage": "t=abc,v1=zz",
    }[case]
    sent = _tamper(body) if case == "one_byte_tampered" else body
    # When it is delivered
    status, answer = invoke(function_url_event(sent, signature, b64=(case == "stale")))
    # Then 400 invalid_signature, and no table changed
    assert (status, answer["error"]["code"]) == (400, "invalid_signature")
    assert scan_all(webhook_env) == before


def test_during_rotation_old_and_new_secrets_both_pass(webhook_env: dict[str, str]) -> None:
    # Given the endpoint accepting two secrets (STRIPE_WEBHOOK_SECRET="new,old")
    tenant_id, _, customer = linked_tenant(plan="basic")
    # When one event is signed with the old secret and another with the new one
    old = deliver(
        stripe_event("invoice.payment_failed", customer=customer, created=BASE_T), secret=OLD_SECRET
    )
    new = deliver(
        stripe_event("invoice.payment_failed", customer=customer, created=BASE_T + 1),
        secret=NEW_SECRET,
    )
    # Then both are applied
    assert (old[0], new[0]) == (200, 200)
    assert profile(tenant_id)["failed_payments"] == 2


def test_a_header_with_both_signatures_passes(webhook_env: dict[str, str]) -> None:
    # Given Stripe's rotation header: one timestamp, a v1 for each secret (only old is ours)
    _, _, customer = linked_tenant(plan="basic")
    body = body_of(stripe_event("invoice.paid", customer=customer))
    t = int(time.time())
    unknown = sign_payload(body, "whsec_someone_else", t).split(",")[1]
    header = f"{sign_payload(body, OLD_SECRET, t)},{unknown}"
    # When it is delivered
    status, _ = invoke(function_url_event(body, header))
    # Then it passes
    assert status == 200


def test_the_secret_is_read_from_ssm_when_the_env_has_none(
    aws: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given no env secret, and the secret in an SSM SecureString named by the parameter setting
    import uuid

    from meterbridge.dal import dynamo

    name = f"/meterbridge/test/{uuid.uuid4().hex}"
    import boto3

    boto3.client("ssm").put_parameter(
        Name=name, Value=f"{NEW_SECRET},{OLD_SECRET}", Type="SecureString"
    )
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET_PARAMETER", name)
    reset_singletons()
    assert dynamo.client() is not None
    _, _, customer = linked_tenant(plan="basic")
    # When an event signed with the old secret is delivered
    status, body = deliver(stripe_event("invoice.paid", customer=customer), secret=OLD_SECRET)
    # Then it passes
    assert (status, body["outcome"]) == (200, "applied")


def test_no_secret_configured_is_a_500_so_stripe_retries(aws: dict[str, str]) -> None:
    # Given no secret at all
    event = stripe_event("invoice.paid", customer="cus_x")
    # When an event arrives
    status, body = deliver(event)
    # Then 500 (Stripe retries until the operator fixes it), nothing written
    assert (status, body["error"]["code"]) == (500, "webhook_not_configured")


# -- NATS ------------------------------------------------------------------------------------


async def test_the_billing_event_is_published_on_the_tenant_subject(
    webhook_env: dict[str, str], nats_server: Any
) -> None:
    # Given a real nats-server and a linked tenant
    import asyncio

    import nats

    tenant_id, _, customer = linked_tenant(plan="free")
    event = stripe_event("customer.subscription.created", customer=customer)
    # When the event is delivered
    status, _ = await asyncio.to_thread(deliver, event)
    # Then the CloudEvent is on meterbridge.tenant.<id>.billing, and not left for republish
    assert status == 200
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        sub = await js.subscribe(f"meterbridge.tenant.{tenant_id}.billing", ordered_consumer=True)
        msg = await sub.next_msg(timeout=5)
        published = json.loads(msg.data)
        assert (published["id"], published["type"]) == (event["id"], "subscription.started")
    finally:
        await nc.close()
        await asyncio.to_thread(_close_sync_publisher)
    assert "republish_shard" not in outbox_item(event["id"])


def _close_sync_publisher() -> None:
    """Close the publisher's private loop and connection (the test owns their lifetime)."""
    from meterbridge.bus.publisher import get_publisher

    publisher = get_publisher()
    loop = publisher._sync_loop
    if loop is not None and not loop.is_closed():
        loop.run_until_complete(publisher._close_quietly())
        loop.close()
