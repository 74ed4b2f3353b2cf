"""Stripe ordering: subscription events applied in any order leave the newest state, by the
ordering key ``state_key(created, rank)``; the webhook's read of the profile spares the write an
older event would have had refused. Pure logic against an in-memory guarded write."""

from __future__ import annotations

from itertools import permutations
from types import SimpleNamespace
from typing import Any

import pytest

from meterbridge.dal.tenant_state import state_key
from meterbridge.logic.stripe.apply import apply_state
from meterbridge.logic.stripe.translate import translate
from meterbridge.models.stripe import BillingChange, StripeEvent
from tests.support.fakes.subscriptions import FakeSubscriptionState

TENANT = "t_0123456789abcdef"
SETTINGS: Any = SimpleNamespace(tenants_table="tenants")
BASIC, PRO = "price_meterbridge_basic_monthly", "price_meterbridge_pro_monthly"


def change(type_: str, created: int, status: str, price: str, sub: str = "sub_1") -> BillingChange:
    obj = {
        "id": sub,
        "object": "subscription",
        "customer": "cus_1",
        "status": status,
        "items": {"object": "list", "data": [{"id": "si_1", "price": {"id": price}}]},
        "metadata": {"tenant_id": TENANT},
    }
    event = StripeEvent.model_validate(
        {
            "id": f"evt_{type_.rsplit('.', 1)[-1]}_{created}_{status}",
            "object": "event",
            "type": f"customer.subscription.{type_}",
            "created": created,
            "data": {"object": obj},
        }
    )
    translated = translate(event)
    assert translated is not None
    return translated


def life() -> list[BillingChange]:
    """A subscription's life: started on Basic, moved to Pro in the same second, past due, then
    ended (built in the test: the plan catalogue reads the test's settings)."""
    return [
        change("created", 100, "active", BASIC),
        change("updated", 100, "active", PRO),
        change("updated", 105, "past_due", PRO),
        change("deleted", 110, "canceled", PRO),
    ]


@pytest.fixture
def state(monkeypatch: pytest.MonkeyPatch) -> FakeSubscriptionState:
    return FakeSubscriptionState(TENANT).install(monkeypatch)


@pytest.mark.parametrize("order", list(permutations(range(4))), ids=str)
def test_any_delivery_order_ends_in_the_newest_state(
    state: FakeSubscriptionState, order: tuple[int, ...]
) -> None:
    # Given the four events of a subscription's life, delivered in this order
    lived = life()
    events = [lived[i] for i in order]

    # When each is applied, each time after a read of the profile (as the webhook does)
    for event in events:
        apply_state(event, TENANT, SETTINGS, profile=dict(state.profile))

    # Then the tenant holds the state of the newest event, the end: back on free
    newest = lived[-1]
    assert state.profile["plan"] == "free"
    assert state.profile["stripe_state_key"] == state_key(newest.created, newest.rank)
    assert state.profile["stripe_subscription"]["event"] == newest.stripe_event_id


@pytest.mark.parametrize("order", [(0, 1), (1, 0)], ids=["in order", "reversed"])
def test_within_one_second_the_later_lifecycle_step_wins(
    state: FakeSubscriptionState, order: tuple[int, int]
) -> None:
    # Given created (Basic) and updated (Pro) in the same second of ``created``
    lived = life()
    events = [lived[i] for i in order]

    # When both are applied, in either order
    changed = [apply_state(event, TENANT, SETTINGS) for event in events]

    # Then the update wins (its rank is higher), and only a newer state counts as a change
    assert state.profile["plan"] == "pro"
    assert changed == ([True, True] if order == (0, 1) else [True, False])


def test_an_older_event_after_a_newer_one_changes_nothing_and_sends_no_write(
    state: FakeSubscriptionState,
) -> None:
    # Given the end of the subscription was applied first
    lived = life()
    assert apply_state(lived[-1], TENANT, SETTINGS, profile=dict(state.profile))
    writes = state.writes

    # When the start arrives late, after a read of the profile
    changed = apply_state(lived[0], TENANT, SETTINGS, profile=dict(state.profile))

    # Then nothing changed, and no write was sent (the read proves it would be refused)
    assert changed is False
    assert state.writes == writes
    assert state.profile["plan"] == "free"


def test_a_stale_read_still_leaves_the_decision_to_the_guarded_write(
    state: FakeSubscriptionState,
) -> None:
    # Given the newer state is stored, but the profile read predates it
    lived = life()
    stale = dict(state.profile)
    apply_state(lived[2], TENANT, SETTINGS)

    # When an older event is applied with the stale read
    changed = apply_state(lived[0], TENANT, SETTINGS, profile=stale)

    # Then the write is sent and refused: the newer state stays
    assert changed is False and state.writes == 2
    assert state.profile["stripe_state_key"] == state_key(lived[2].created, lived[2].rank)


def test_the_end_of_a_replaced_subscription_does_not_downgrade_the_tenant(
    state: FakeSubscriptionState,
) -> None:
    # Given the tenant moved to a new subscription (sub_2, Pro)
    apply_state(change("created", 200, "active", PRO, sub="sub_2"), TENANT, SETTINGS)

    # When the old subscription's deletion arrives, newer than every stored state
    changed = apply_state(change("deleted", 210, "canceled", BASIC, sub="sub_1"), TENANT, SETTINGS)

    # Then the tenant keeps the new subscription and its plan
    assert changed is False
    assert state.profile["plan"] == "pro" and state.profile["stripe_subscription_id"] == "sub_2"
