"""Translations and plan rules, on minimal event shapes (the full shapes are contract-tested)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterbridge.dal.tenant_state import state_key
from meterbridge.logic.stripe.translate import plan_for, translate
from meterbridge.models.stripe import StripeEvent


def event(type_: str, obj: dict[str, Any], created: int = 100) -> StripeEvent:
    return StripeEvent.model_validate(
        {
            "id": "evt_unit1",
            "object": "event",
            "type": type_,
            "created": created,
            "data": {"object": obj},
        }
    )


def subscription(status: str, price: str = "price_meterbridge_pro_monthly") -> dict[str, Any]:
    return {
        "id": "sub_1",
        "object": "subscription",
        "customer": "cus_1",
        "status": status,
        "items": {"object": "list", "data": [{"id": "si_1", "price": {"id": price}}]},
        "metadata": {"tenant_id": "t_abc"},
    }


@pytest.mark.parametrize(
    ("status", "ended", "plan"),
    [
        ("active", False, "pro"),
        ("trialing", False, "pro"),
        ("past_due", False, "pro"),
        ("incomplete", False, None),
        ("canceled", False, "free"),
        ("active", True, "free"),
        ("paused", False, "free"),
    ],
)
def test_plan_follows_status_and_price(status: str, ended: bool, plan: str | None) -> None:
    # Given a subscription status / When its plan is derived / Then the documented rule holds
    assert plan_for("price_meterbridge_pro_monthly", status, ended) == plan


def test_an_unknown_price_leaves_the_plan_unchanged() -> None:
    # Given a price no plan uses / When its plan is derived / Then None (unchanged)
    assert plan_for("price_not_ours", "active", False) is None


def test_later_lifecycle_steps_rank_higher_within_a_second() -> None:
    # Given created, updated and deleted of one subscription
    ranks = [
        translate(event(t, subscription(s))).rank  # type: ignore[union-attr]
        for t, s in [
            ("customer.subscription.created", "active"),
            ("customer.subscription.updated", "active"),
            ("customer.subscription.updated", "canceled"),
            ("customer.subscription.deleted", "canceled"),
        ]
    ]
    # When ranked / Then each later step outranks the earlier ones
    assert ranks == sorted(ranks) and len(set(ranks)) == 4


def test_an_expanded_customer_object_is_read_by_id() -> None:
    # Given an invoice whose customer is expanded
    obj = {"id": "in_1", "object": "invoice", "customer": {"id": "cus_9", "object": "customer"}}
    # When translated / Then the customer id is found
    change = translate(event("invoice.payment_failed", obj))
    assert change is not None and change.customer_id == "cus_9"


@pytest.mark.parametrize("type_", ["customer.created", "invoice.created", "charge.succeeded"])
def test_other_types_are_ignored(type_: str) -> None:
    # Given another type / When translated / Then nothing
    assert translate(event(type_, {"id": "x", "object": "thing"})) is None


def test_the_cloud_event_is_stable_across_redeliveries() -> None:
    # Given the same Stripe event translated twice
    a = translate(event("invoice.paid", {"id": "in_1", "object": "invoice"}, created=1780000000))
    b = translate(event("invoice.paid", {"id": "in_1", "object": "invoice"}, created=1780000000))
    assert a is not None and b is not None
    # When made into CloudEvents / Then id, time and data are identical (outbox dedupe holds)
    assert a.cloud_event("t_1").wire() == b.cloud_event("t_1").wire()
    assert a.cloud_event("t_1").time == "2026-05-28T20:26:40Z"


@given(
    a=st.tuples(st.integers(0, 4_000_000_000), st.integers(0, 13)),
    b=st.tuples(st.integers(0, 4_000_000_000), st.integers(0, 13)),
)
def test_the_packed_ordering_key_orders_like_created_then_rank(
    a: tuple[int, int], b: tuple[int, int]
) -> None:
    # Given two (created, rank) pairs with ranks in translate's range (at most 3 + 10)
    # When they are packed into the one guard attribute
    key_a, key_b = state_key(*a), state_key(*b)
    # Then the keys compare exactly like the pairs
    assert (key_a < key_b) == (a < b) and (key_a == key_b) == (a == b)


def test_every_rank_translate_gives_fits_the_packed_key() -> None:
    # Given the most terminal subscription event (deleted, canceled)
    change = translate(event("customer.subscription.deleted", subscription("canceled")))
    # Then its rank is below the key's span, so it never spills into the created second
    assert change is not None and 0 < change.rank < state_key(1, 0) - state_key(0, 0)
