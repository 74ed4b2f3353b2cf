"""Offboarding bills the last, partial period on a final invoice (issue 15), on the local stack:
the dev app over HTTP, the Stripe stand-in through the real stripe client, faults injected."""

from __future__ import annotations

import json

import httpx
from typer.testing import CliRunner

from meterbridge_dev.cli.main import app
from tests.support.billing import (
    Stack,
    Tenant,
    admin_token,
    basic_tenant,
    link_subscription,
    send,
    stack,
    usage,
)
from tests.support.tenants import AUTH

__all__ = ["admin_token", "stack"]


def offboard(stack: Stack, tenant: Tenant) -> httpx.Response:
    return httpx.delete(f"{stack.url}/admin/tenants/{tenant.tenant_id}", headers=AUTH, timeout=60)


def test_offboarding_bills_the_last_period_once_on_a_final_invoice_through_crashes(
    admin_token: None, stack: Stack
) -> None:
    # Given a Basic tenant over two meters in its current, partial period
    tenant = basic_tenant(stack)
    link_subscription(tenant)
    send(stack, tenant, "api.call", 12)  # 7 over 5: one block of 1,000 at $0.10
    send(stack, tenant, "query", 5)  # 2 over 3 at $0.50
    current = usage(stack, tenant)["current"]
    period = current["period"]
    expected = {m["meter"]: m["overage_charge_cents"] for m in current["meters"]}
    expected = {meter: cents for meter, cents in expected.items() if cents}
    assert expected == {"api_calls": 10, "queries": 100}
    # And Stripe accepting the first invoice item but the answer lost (a crash after the call),
    # then finalizing the invoice but the answer lost
    stack.stripe.inject_fault("POST", "/v1/invoiceitems", status=500, after_action=True)
    stack.stripe.inject_fault("POST", "/v1/invoices/", status=500, after_action=True)

    # When the operator offboards, and retries each failure
    first = offboard(stack, tenant)
    second = offboard(stack, tenant)
    done = offboard(stack, tenant)
    again = offboard(stack, tenant)

    # Then the failures answered 502 and the retries finished the job
    assert (first.status_code, second.status_code) == (502, 502), (first.text, second.text)
    assert done.status_code == 200 and done.json()["status"] == "deleted", done.text
    assert again.json() == done.json()
    # And one final invoice, finalized, carries one line per meter at /v1/usage's amounts
    mine = [i for i in stack.stripe.invoices() if i["customer"] == tenant.customer]
    [final] = mine  # no proration or cancellation invoice from Stripe either
    assert final["status"] == "open" and final["metadata"]["meterbridge_final_period"] == period
    assert done.json()["final_invoice_id"] == final["id"]
    items = [i for i in stack.stripe.invoiceitems() if i["customer"] == tenant.customer]
    assert {i["metadata"]["meter"]: i["amount"] for i in items} == expected
    assert len(items) == len(expected) and all(i["invoice"] == final["id"] for i in items)
    assert all(i["metadata"]["period"] == period for i in items)
    assert final["total"] == sum(expected.values())
    # And the subscription ended at once, without proration and without a Stripe invoice
    sub = stack.stripe.get_subscription(tenant.subscription)
    assert sub is not None and sub["status"] == "canceled"
    [cancel] = [r for r in stack.stripe.requests() if r["method"] == "DELETE"]
    assert cancel["params"] == {"invoice_now": "false", "prorate": "false"}
    # And billing reconcile finds nothing unbilled nor billed twice for that period
    report = CliRunner().invoke(app, ["billing", "reconcile", "--period", period, "--json"])
    assert report.exit_code == 0, report.output
    body = json.loads(report.output)
    assert body["difference_cents"] == 0
    rows = {r["meter"]: r for r in body["rows"] if r["tenant_id"] == tenant.tenant_id}
    assert {m: r["invoiced_cents"] for m, r in rows.items()} == expected


def test_offboarding_with_nothing_over_the_limits_makes_no_invoice(
    admin_token: None, stack: Stack
) -> None:
    # Given a Basic tenant within its limits
    tenant = basic_tenant(stack)
    link_subscription(tenant)
    send(stack, tenant, "api.call", 2)

    # When it is offboarded
    done = offboard(stack, tenant)

    # Then no invoice is made, and the subscription is cancelled
    assert done.status_code == 200, done.text
    assert done.json()["final_invoice_id"] is None
    assert [i for i in stack.stripe.invoices() if i["customer"] == tenant.customer] == []
    sub = stack.stripe.get_subscription(tenant.subscription)
    assert sub is not None and sub["status"] == "canceled"
