"""Plan changes mid-period: the parts and their prices (docs/billing.md#plan-changes)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from meterbridge.logic.billing import plan_parts
from meterbridge.plans import catalog


def at(day: int) -> int:
    return int(datetime(2026, 4, day, tzinfo=UTC).timestamp())


def test_a_period_without_a_change_in_it_is_not_split() -> None:
    # Given a change recorded in another period
    changes = [{"at": at(10), "period": "2026-04", "from": "basic", "to": "pro", "used": {}}]

    # When May's parts are asked for
    # Then there are none: May is priced whole with the plan in force
    assert plan_parts.parts("2026-05", changes, catalog().plan("pro")) is None


def test_an_upgrade_splits_usage_and_prorates_limits_by_the_parts_share() -> None:
    # Given Basic to Pro after 9 of April's 30 days, with 1,500 queries before and 2,000 after
    change = {
        "at": at(10),
        "period": "2026-04",
        "from": "basic",
        "to": "pro",
        "used": {"queries": "1500"},
    }
    split = plan_parts.parts("2026-04", [change], catalog().plan("pro"))
    assert split is not None

    # When the queries meter is priced per part
    charges = plan_parts.price_parts("queries", catalog().hard_capped, Decimal(3500), split)

    # Then Basic's part has 9/30 of 1,000 queries included, Pro's 21/30 of 10,000
    basic, pro = charges
    assert (basic.plan.id, pro.plan.id) == ("basic", "pro")
    assert (basic.used, pro.used) == (1500, 2000)
    assert (basic.limit, pro.limit) == (300, 7000)
    assert (basic.overage, pro.overage) == (1200, 0)
    assert basic.cents == 1200 * 50 and pro.cents == 0


def test_tier_bounds_scale_with_the_part() -> None:
    # Given Pro to Basic halfway through April (15 days) with 800,000 tokens on Basic's half
    change = {
        "at": at(16),
        "period": "2026-04",
        "from": "pro",
        "to": "basic",
        "used": {"tokens": "0"},
    }
    split = plan_parts.parts("2026-04", [change], catalog().plan("basic"))
    assert split is not None

    # When tokens (free up to 1,000,000 on Basic, then 0.0002 cents each) are priced
    _, basic = plan_parts.price_parts("tokens", catalog().hard_capped, Decimal(800_000), split)

    # Then half of the free tier applies: 300,000 tokens at 0.0002 cents
    assert basic.cents == Decimal(300_000) * Decimal("0.0002")


def test_only_changes_still_billable_are_kept() -> None:
    # Given changes in January and March, and a new one in May
    old = [{"period": "2026-01", "at": 1}, {"period": "2026-03", "at": 2}]
    record = {"period": "2026-05", "at": 3}

    # When the history is updated
    kept = plan_parts.with_change(old, record)

    # Then January (beyond the late-usage window) is dropped
    assert [c["period"] for c in kept] == ["2026-03", "2026-05"]
