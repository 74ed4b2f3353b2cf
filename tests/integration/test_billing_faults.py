"""Faults on the overage path (issue 15): a webhook Lambda killed between Stripe's answer and
the record, and Stripe failing (500, 429). The webhook Lambda runs in-process against moto and
the Stripe stand-in over HTTP."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pytest

from meterbridge.dal import billing as billing_dal
from meterbridge.logic.periods import bounds
from meterbridge.settings import get_settings
from tests.support import billing as billing_support
from tests.support import tenants as tenant_support
from tests.support.billing import PERIOD
from tests.support.tenants import FakeStripe
from tests.support.webhooks import deliver

fake_stripe = tenant_support.fake_stripe
setup = billing_support.setup  # the tenant over its quota and the draft invoice closing it


class Killed(BaseException):
    """The Lambda runtime killing the function mid-call (no except clause catches it)."""


def items_on(fake: FakeStripe, invoice_id: str) -> list[dict[str, Any]]:
    return [i for i in fake.state.invoiceitems() if i["invoice"] == invoice_id]


def records(tenant_id: str) -> list[dict[str, Any]]:
    found = billing_dal.records(get_settings().usage_table, tenant_id, PERIOD, "queries")
    return [asdict(record) for record in found]


@pytest.mark.parametrize("keys_expired", [False, True], ids=["within-24h", "after-24h"])
def test_a_lambda_killed_after_stripe_accepted_the_item_never_duplicates_it(
    setup: tuple[FakeStripe, str, dict[str, Any], dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    keys_expired: bool,
) -> None:
    fake, tenant_id, invoice, event = setup
    # Given a webhook Lambda that dies after Stripe created the item, before the record says so
    real = billing_dal.mark_billed

    def killed(*args: Any, **kwargs: Any) -> bool:
        raise Killed()

    monkeypatch.setattr(billing_dal, "mark_billed", killed)
    with pytest.raises(Killed):
        deliver(event)
    assert len(items_on(fake, invoice["id"])) == 1
    assert [r["state"] for r in records(tenant_id)] == ["pending"]

    # When Stripe redelivers (possibly after its idempotency keys expired)
    monkeypatch.setattr(billing_dal, "mark_billed", real)
    if keys_expired:
        fake.state.expire_idempotency_keys()
    status, body = deliver(event)

    # Then the item exists once, and the record names it as billed
    assert status == 200 and body["outcome"] == "applied", body
    [item] = items_on(fake, invoice["id"])
    assert item["amount"] == 250  # 5 queries over at $0.50
    [record] = records(tenant_id)
    assert record["state"] == "billed" and record["item_id"] == item["id"]


@pytest.mark.parametrize("status", [500, 429])
def test_stripe_failing_answers_5xx_and_records_nothing_as_billed(
    setup: tuple[FakeStripe, str, dict[str, Any], dict[str, Any]], status: int
) -> None:
    fake, tenant_id, invoice, event = setup
    # Given Stripe refusing to add invoice items
    fake.state.inject_fault("POST", "/v1/invoiceitems", status=status, count=5)

    # When invoice.created arrives
    code, body = deliver(event)

    # Then the webhook answers 5xx (Stripe retries), no item exists and nothing is billed
    assert code >= 500, body
    assert items_on(fake, invoice["id"]) == []
    assert all(r["state"] != "billed" for r in records(tenant_id))

    # And Stripe's redelivery, once Stripe works again, bills it once
    fake.state.clear_faults()
    code, body = deliver(event)
    assert code == 200 and body["outcome"] == "applied", body
    assert [i["amount"] for i in items_on(fake, invoice["id"])] == [250]
    assert [r["state"] for r in records(tenant_id)] == ["billed"]


def test_a_draft_finalized_before_the_event_is_left_alone_and_the_next_invoice_catches_up(
    setup: tuple[FakeStripe, str, dict[str, Any], dict[str, Any]],
) -> None:
    fake, _, invoice, event = setup
    # Given the draft was finalized before invoice.created was handled
    fake.state.finalize_invoice(invoice["id"])

    # When it arrives: nothing is added to it
    code, body = deliver(event)
    assert code == 200 and body["outcome"] == "ignored", body
    assert items_on(fake, invoice["id"]) == []

    # When the next period's cycle invoice is created
    start, end = (int(t.timestamp()) for t in bounds("2026-02"))
    customer = invoice["customer"]
    nxt, next_event = fake.state.add_draft_invoice(customer, start, end)
    assert next_event is not None
    assert deliver(next_event)[0] == 200

    # Then it carries PERIOD's overage once, labelled as such
    [item] = items_on(fake, nxt["id"])
    assert item["amount"] == 250 and item["metadata"]["period"] == PERIOD
    assert item["description"].startswith(f"Overage for {PERIOD} (not on its own invoice)")
