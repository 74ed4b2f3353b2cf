"""The overage records of a cycle invoice, exactly once (docs/billing.md#exactly-once): pure
logic against the in-memory billing repository and Stripe invoices, sockets off."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from meterbridge.logic.billing import invoice as invoice_logic
from meterbridge.models.billing import OverageLine
from meterbridge.plans import catalog
from tests.support.fakes.billing import FakeBillingRepository, FakeInvoices

TENANT = "t_0123456789abcdef"
CUSTOMER = "cus_1"
SETTINGS: Any = SimpleNamespace(usage_table="usage")


@pytest.fixture
def repo(monkeypatch: pytest.MonkeyPatch) -> FakeBillingRepository:
    return FakeBillingRepository().install(monkeypatch)


@pytest.fixture
def stripe() -> FakeInvoices:
    return FakeInvoices()


def overage(monkeypatch: pytest.MonkeyPatch, cents_by_period: dict[str, int]) -> None:
    """The metered overage of queries per period, as ``overage_lines`` would price it."""

    def lines(tenant_id: str, plan: Any, period: str, settings: Any, **_: Any) -> list[Any]:
        cents = cents_by_period.get(period, 0)
        return [OverageLine("queries", cents, "usd", f"Queries: {cents}")] if cents else []

    monkeypatch.setattr(invoice_logic, "overage_lines", lines)


def records_for(invoice: dict[str, Any], stripe: FakeInvoices) -> list[Any]:
    period = str(invoice["id"]).removeprefix("in_")
    basic = catalog().plan("basic")
    return invoice_logic.plan_records(TENANT, basic, period, invoice, SETTINGS, stripe)


def test_late_usage_of_a_billed_period_is_claimed_as_the_difference(
    repo: FakeBillingRepository, stripe: FakeInvoices, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given January's 100 cents were billed on its own invoice
    overage(monkeypatch, {"2026-01": 100})
    january = stripe.add_invoice("in_2026-01", CUSTOMER)
    [first] = records_for(january, stripe)
    invoice_logic.resume(first, stripe, SETTINGS)

    # When February's invoice is created after late January usage (now 250) and 300 in February
    overage(monkeypatch, {"2026-01": 250, "2026-02": 300})
    february = stripe.add_invoice("in_2026-02", CUSTOMER)
    wanted = records_for(february, stripe)

    # Then it carries February's 300 and January's 150 still unbilled, each claimed pending
    assert [(r.period, r.amount_cents, r.state) for r in wanted] == [
        ("2026-02", 300, "pending"),
        ("2026-01", 150, "pending"),
    ]
    assert (
        wanted[1].description == "Late usage for 2026-01: Queries: 250, less $1.00 already billed"
    )
    assert {r.invoice_id for r in wanted} == {"in_2026-02"}


def test_a_redelivery_resumes_the_claimed_records_and_makes_each_item_once(
    repo: FakeBillingRepository, stripe: FakeInvoices, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given February's invoice claimed its record and its item was made, but not yet recorded
    overage(monkeypatch, {"2026-02": 300})
    february = stripe.add_invoice("in_2026-02", CUSTOMER)
    [claimed] = records_for(february, stripe)
    stripe.create_invoice_item(invoice_logic.item_params(claimed), claimed.idempotency_key)
    stripe.created_by_key.clear()  # beyond Stripe's 24 hours of idempotency keys

    # When the event is delivered again
    [again] = records_for(february, stripe)
    item_id = invoice_logic.resume(again, stripe, SETTINGS)

    # Then the same record is resumed, the existing item found by its metadata, and marked billed
    assert again == claimed
    assert [i["id"] for i in stripe.items] == [item_id]
    [stored] = repo.stored.values()
    assert (stored.state, stored.item_id) == ("billed", item_id)
    assert records_for(february, stripe) == []


def test_a_pending_line_on_a_finalized_invoice_without_its_item_counts_nothing(
    repo: FakeBillingRepository, stripe: FakeInvoices, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given January's line was claimed, then its invoice was finalized before the item was made
    overage(monkeypatch, {"2026-01": 100})
    january = stripe.add_invoice("in_2026-01", CUSTOMER)
    records_for(january, stripe)
    stripe.invoices["in_2026-01"]["status"] = "open"

    # When February's invoice is created
    february = stripe.add_invoice("in_2026-02", CUSTOMER)
    wanted = records_for(february, stripe)

    # Then January's whole overage is on it, labelled as not on its own invoice
    assert [(r.period, r.amount_cents) for r in wanted] == [("2026-01", 100)]
    assert wanted[0].description.startswith("Overage for 2026-01 (not on its own invoice)")
