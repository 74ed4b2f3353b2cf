"""Threshold alerts (logic/ingest/thresholds.py) against in-memory usage and outbox."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from meterbridge.logic import meters
from meterbridge.logic.ingest import quota, thresholds
from meterbridge.logic.periods import period_of
from meterbridge.models.cloudevent import CloudEvent
from meterbridge.plans import catalog
from tests.support.fakes.outbox import FakeOutbox, FakeUsage

NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
PERIOD = period_of(NOW)
TENANT = "t-thresholds"


def _written(n: int) -> quota.Written:
    event = CloudEvent(id="e", source="s", type="api.call", subject=TENANT, time="t", data={})
    return [
        ([meters.Fed(PERIOD, meters.Feed(meter="api_calls"), "t", "e")], event) for _ in range(n)
    ]


def test_count_meters_add_one_per_event_and_others_are_read() -> None:
    # Given three stored events of a COUNT meter and one of a MAX meter
    written = _written(3)
    written[0][0].append(meters.Fed(PERIOD, meters.Feed("storage_gb", Decimal(2)), "t", "e"))

    # When what they added is estimated
    added = thresholds.added(written)

    # Then the COUNT meter grew by at most three, the MAX meter must be read
    assert added == {"api_calls": Decimal(3), "storage_gb": None}


def test_each_threshold_fires_once_per_period_and_meter() -> None:
    # Given a basic tenant at 85% of its api_calls (100,000)
    plan = catalog().plan("basic")
    usage, outbox = FakeUsage(table="usage-fires-once"), FakeOutbox()
    usage.totals[(TENANT, PERIOD, "api_calls")] = Decimal(85_000)

    # When two requests in a row add to the meter
    first = thresholds.reached(
        TENANT, plan, PERIOD, {"api_calls": None}, NOW, outbox=outbox, usage=usage
    )
    second = thresholds.reached(
        TENANT, plan, PERIOD, {"api_calls": None}, NOW, outbox=outbox, usage=usage
    )

    # Then the 80% alert fired once, into the outbox, and not the 100% one
    assert [a.data["threshold_percent"] for a in first] == [80]
    assert second == []
    assert [(e.tenant_id, e.kind) for e in outbox.stored.values()] == [(TENANT, "usage")]
    assert first[0].type == "usage.threshold_reached" and first[0].data["used"] == 85_000


def test_a_meter_far_below_its_first_threshold_is_not_read_again_soon() -> None:
    # Given a tenant at 10% whose total this process has read once
    plan = catalog().plan("basic")
    usage, outbox = FakeUsage(table="usage-far-below"), FakeOutbox()
    usage.totals[(TENANT, PERIOD, "api_calls")] = Decimal(10_000)
    thresholds.reached(
        TENANT, plan, PERIOD, {"api_calls": Decimal(1)}, NOW, outbox=outbox, usage=usage
    )

    # When ten more requests each add one event
    for _ in range(10):
        thresholds.reached(
            TENANT, plan, PERIOD, {"api_calls": Decimal(1)}, NOW, outbox=outbox, usage=usage
        )

    # Then the total was read once, and no alert fired
    assert usage.reads == 1
    assert outbox.stored == {}
