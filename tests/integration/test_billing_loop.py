"""The money loop end to end on the local stack (issue 15): usage over HTTP, the Stripe
stand-in's test clock across the period end, signed webhooks redelivered, the invoice."""

from __future__ import annotations

import json
import threading

from typer.testing import CliRunner

from meterbridge_dev.cli.main import app
from tests.support.billing import (
    Stack,
    advance,
    basic_tenant,
    created_event,
    invoices,
    overage_items,
    period_end,
    send,
    stack,
    usage,
    utc_month,
)

__all__ = ["stack"]


def test_the_invoice_carries_each_meters_overage_once_and_late_usage_once_on_the_next(
    stack: Stack,
) -> None:
    # Given a Basic tenant (anchored to the calendar month) over two meters in period P
    tenant = basic_tenant(stack)
    send(stack, tenant, "api.call", 12)  # 7 over 5: one block of 1,000 at $0.10
    send(stack, tenant, "query", 5)  # 2 over 3 at $0.50
    current = usage(stack, tenant)["current"]
    period = current["period"]
    expected = {m["meter"]: m["overage_charge_cents"] for m in current["meters"]}
    assert expected["api_calls"] == 10 and expected["queries"] == 100
    preview = current["next_invoice"]  # what the tenant is told the invoice will carry
    assert preview["base_price_cents"] == 9900 and preview["total_cents"] == 9900 + 110
    assert {line["meter"]: line["amount_cents"] for line in preview["lines"]} == {
        meter: cents for meter, cents in expected.items() if cents
    }
    end = period_end(stack, tenant)
    assert utc_month(end - 1) == period and utc_month(end) != period  # Stripe's period is P

    # When the test clock crosses the period end (invoice.created is delivered once) ...
    advance(stack, tenant, end + 5)
    [draft] = invoices(stack, tenant)
    assert draft["status"] == "draft" and draft["billing_reason"] == "subscription_cycle"
    event = created_event(stack, draft["id"])
    # ... twice more concurrently, ...
    statuses: list[int] = []
    threads = [
        threading.Thread(target=lambda: statuses.append(stack.stripe.deliver(event, attempts=1)))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200, 200]
    # ... the invoice is finalized and paid, and invoice.created arrives once more
    advance(stack, tenant, end + 2 * 3600)
    assert stack.stripe.deliver(event, attempts=1) == 200

    # Then the invoice for P carries exactly one item per meter, equal to /v1/usage's overage
    paid = next(i for i in stack.stripe.invoices() if i["id"] == draft["id"])
    assert paid["status"] == "paid"
    items = overage_items(stack, draft["id"])
    assert sorted(i["metadata"]["meter"] for i in items) == ["api_calls", "queries"]
    for item in items:
        assert item["metadata"]["period"] == period
        assert item["metadata"]["meterbridge_tenant"] == tenant.tenant_id
        assert item["amount"] == expected[item["metadata"]["meter"]]
        [told] = [line for line in preview["lines"] if line["meter"] == item["metadata"]["meter"]]
        assert item["description"] == told["description"]
    queries = next(i for i in items if i["metadata"]["meter"] == "queries")
    assert queries["description"] == "Queries over 3: 2 \u00d7 $0.50"
    assert paid["total"] == 9900 + 10 + 100
    deliveries = [d for d in stack.stripe.deliveries() if d["type"].startswith("invoice.")]
    assert [d["type"] for d in deliveries][-1] == "invoice.created"
    assert all(d["status"] == 200 for d in deliveries)

    # When late events for P arrive (two more queries: 100 cents more) and the next period closes
    send(stack, tenant, "query", 2)
    advance(stack, tenant, period_end(stack, tenant) + 5)
    nxt = invoices(stack, tenant)[-1]
    assert nxt["id"] != draft["id"] and nxt["status"] == "draft"
    assert stack.stripe.deliver(created_event(stack, nxt["id"]), attempts=1) == 200

    # Then the next invoice carries the difference once, labelled as late usage for P
    [late] = overage_items(stack, nxt["id"])
    assert late["amount"] == 100
    assert late["metadata"]["period"] == period and late["metadata"]["meter"] == "queries"
    assert late["description"].startswith(f"Late usage for {period}: ")
    assert len(overage_items(stack, draft["id"])) == 2  # the first invoice was not touched

    # And reconcile reports zero difference for P: every metered cent is on an invoice
    done = CliRunner().invoke(app, ["billing", "reconcile", "--period", period, "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.output)
    rows = {r["meter"]: r for r in report["rows"] if r["tenant_id"] == tenant.tenant_id}
    assert rows["api_calls"]["invoiced_cents"] == rows["api_calls"]["metered_cents"] == 10
    assert rows["queries"]["invoiced_cents"] == rows["queries"]["metered_cents"] == 200
    assert report["difference_cents"] == 0
