"""A plan change mid-period prices each part with the plan in force (issue 15), on the local
stack: the upgrade through the admin API, the invoice through the Stripe stand-in's test clock."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal

import httpx

from meterbridge.dal import tenants as tenants_dal
from meterbridge.settings import get_settings
from tests.support.billing import (
    Stack,
    admin_token,
    advance,
    basic_tenant,
    invoices,
    link_subscription,
    overage_items,
    period_end,
    send,
    stack,
    usage,
)
from tests.support.tenants import AUTH

__all__ = ["admin_token", "stack"]


def whole(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def test_an_upgrade_mid_period_prices_each_part_with_its_plan_on_the_invoice_and_preview(
    admin_token: None, stack: Stack
) -> None:
    # Given a Basic tenant (5 API calls and 3 queries included here) with Pro's price in Stripe
    stack.stripe.add_price(unit_amount=49900, lookup_key="meterbridge_pro")
    tenant = basic_tenant(stack)
    link_subscription(tenant)
    # And, on Basic, 12 API calls and 8 queries
    send(stack, tenant, "api.call", 12)
    send(stack, tenant, "query", 8)

    # When it is upgraded to Pro, and sends 4 more queries and 3 more API calls on Pro
    changed = httpx.patch(
        f"{stack.url}/admin/tenants/{tenant.tenant_id}", json={"plan": "pro"}, headers=AUTH
    )
    assert changed.status_code == 200 and changed.json()["plan"] == "pro", changed.text
    send(stack, tenant, "query", 4)
    send(stack, tenant, "api.call", 3)

    # Then the change was recorded at its instant with the usage up to it
    profile = tenants_dal.get_tenant(get_settings().tenants_table, tenant.tenant_id)
    assert profile is not None
    [change] = profile["plan_changes"]
    assert (change["from"], change["to"]) == ("basic", "pro")
    assert Decimal(change["used"]["queries"]) == 8 and Decimal(change["used"]["api_calls"]) == 12
    # And Basic's part (its limits times its share of the period) carries the overage
    current = usage(stack, tenant)["current"]
    start = datetime.fromisoformat(current["start"]).timestamp()
    end = datetime.fromisoformat(current["end"]).timestamp()
    share = Decimal(int(change["at"]) - int(start)) / Decimal(int(end) - int(start))
    basic_queries = 8 - whole(3 * share)  # $0.50 each; Pro's part stays within its share
    basic_calls = 12 - whole(5 * share)  # per started 1,000 at $0.10
    expected = {"queries": 50 * basic_queries, "api_calls": 10 * math.ceil(basic_calls / 1000)}
    assert expected["queries"] >= 50 * 5  # more than Pro for the whole period (0), less than
    assert expected["queries"] <= 50 * 9  # Basic for the whole period (9 over 3 at $0.50)
    meters = {m["meter"]: m for m in current["meters"]}
    assert {m: meters[m]["overage_charge_cents"] for m in expected} == expected
    assert [p["plan"] for p in meters["queries"]["parts"]] == ["basic", "pro"]
    assert [p["used"] for p in meters["queries"]["parts"]] == [8, 4]
    preview = current["next_invoice"]
    assert {line["meter"]: line["amount_cents"] for line in preview["lines"]} == expected
    assert preview["base_price_cents"] == 49900
    query_line = next(line for line in preview["lines"] if line["meter"] == "queries")
    assert "Basic" in query_line["description"] and "Pro" in query_line["description"]

    # When the test clock crosses the period end and the cycle invoice is created
    advance(stack, tenant, period_end(stack, tenant) + 5)

    # Then the invoice carries those amounts, to the cent, once
    [draft] = invoices(stack, tenant)
    items = overage_items(stack, draft["id"])
    assert {i["metadata"]["meter"]: i["amount"] for i in items} == expected
    assert len(items) == len(expected)
    assert {i["description"] for i in items} == {line["description"] for line in preview["lines"]}
    assert (
        datetime.fromtimestamp(draft["period_start"], UTC).strftime("%Y-%m") == (current["period"])
    )
