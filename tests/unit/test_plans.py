"""Plans are data: the figures of the reference pricing table (seed 004)."""

from __future__ import annotations

import pytest

from meterbridge.errors import ValidationFailed
from meterbridge.plans import catalog


def test_the_four_plans_carry_the_reference_prices_and_rate_limits() -> None:
    # Given the catalogue
    plans = catalog().plans
    # Then the prices and per-minute rate limits are the reference table's
    assert list(plans) == ["free", "basic", "pro", "enterprise"]
    assert [plans[p].base_price_cents for p in plans] == [0, 9900, 49900, None]
    assert [plans[p].requests_per_minute for p in plans] == [100, 1000, 10000, 100000]
    # and daily event limits (10K, 100K, 1M per day) are expressed per 30-day period
    assert [plans[p].limit("events") for p in plans] == [300_000, 3_000_000, 30_000_000, None]
    assert plans["free"].hard_limit and not plans["basic"].hard_limit


def test_overage_is_charged_per_started_block() -> None:
    # Given Basic ($0.10 per 1K events over) and Pro ($0.05 per 1K)
    basic, pro = catalog().plan("basic"), catalog().plan("pro")
    # When usage is within, just over, and well over the limit
    # Then the overage follows the reference overage prices
    assert basic.overage_cents("events", 3_000_000) == 0
    assert basic.overage_cents("events", 3_000_001) == 10
    assert basic.overage_cents("events", 3_002_000) == 20
    assert pro.overage_cents("events", 30_010_000) == 50
    assert basic.overage_cents("queries", 1_003) == 150
    assert catalog().plan("free").overage_cents("events", 10**9) == 0


def test_event_types_select_meters() -> None:
    # Given the catalogue's meter mapping / When / Then
    cat = catalog()
    assert cat.meter_for_type("query") == "queries"
    assert cat.meter_for_type("api.call") == "api_calls"
    assert cat.meter_for_type("anything.else") == "events"


def test_unknown_plan_is_a_clear_validation_error() -> None:
    # When an unknown plan is asked for / Then a 400 naming the known plans
    with pytest.raises(ValidationFailed) as info:
        catalog().plan("platinum")
    assert info.value.status == 400
    assert info.value.details == {"plans": ["basic", "enterprise", "free", "pro"]}


def test_stripe_price_maps_back_to_its_plan() -> None:
    # Given a price id from the catalogue / When looked up / Then the plan comes back
    assert catalog().plan_for_price("price_meterbridge_pro_monthly").id == "pro"
    assert catalog().plan_for_price("price_unknown") is None
