"""The in-process token bucket of logic/rate.py (no I/O: explicit clock values)."""

from __future__ import annotations

import pytest

from meterbridge.errors import RateLimited
from meterbridge.logic import rate
from meterbridge.plans import catalog


@pytest.fixture(autouse=True)
def _fresh_buckets() -> None:
    rate.reset()


def test_a_burst_over_the_bucket_is_refused_with_retry_after() -> None:
    # Given Pro (10,000 per minute: 166.7/s, a bucket of 10 s = 1,666 requests)
    plan = catalog().plan("pro")

    # When 1,666 requests arrive at one instant, then one more
    for _ in range(1666):
        rate.take_local("t_burst", plan, now=100.0)
    with pytest.raises(RateLimited) as refused:
        rate.take_local("t_burst", plan, now=100.0)

    # Then the extra one is refused, told to come back in about the time of one token
    assert refused.value.status == 429 and refused.value.code == "rate_limited"
    assert refused.value.headers["Retry-After"] == "1"


def test_the_bucket_refills_at_the_plan_rate_and_tenants_are_apart() -> None:
    # Given Basic (1,000 per minute: 16.7/s; a bucket of 166.7) drained to empty
    plan = catalog().plan("basic")
    taken = 0
    with pytest.raises(RateLimited):
        while True:
            rate.take_local("t_a", plan, now=0.0)
            taken += 1
    assert taken == 166

    # When 3 s pass (50 tokens)
    for _ in range(50):
        rate.take_local("t_a", plan, now=3.0)

    # Then those pass and the next is refused; another tenant has its own full bucket
    with pytest.raises(RateLimited):
        rate.take_local("t_a", plan, now=3.0)
    rate.take_local("t_b", plan, now=3.0)


def test_small_plans_get_at_least_the_minimum_burst() -> None:
    # Given Free (100 per minute): 10 s of it would be 16 requests
    plan = catalog().plan("free")

    # Then a burst of MIN_BURST still passes (the shared minute window is the real cap)
    for _ in range(int(rate.MIN_BURST)):
        rate.take_local("t_free", plan, now=0.0)
    with pytest.raises(RateLimited):
        rate.take_local("t_free", plan, now=0.0)
