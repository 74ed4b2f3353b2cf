"""The shared minute window reserved in chunks, against the moto server: one conditional
``ADD k`` per chunk, the window's item never past the plan's limit, the last slots taken
singly, and a process that goes away loses at most its unused chunk."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from meterbridge.dal import dynamo
from meterbridge.logic import rate
from meterbridge.plans import catalog
from meterbridge.settings import Settings, get_settings
from tests.support.dynamo import dynamodb_calls
from tests.support.rate import admitted_until_refused, take

NOW = datetime(2026, 12, 3, 18, 0, 5, tzinfo=UTC)


@pytest.fixture
def settings(aws: dict[str, str]) -> Settings:
    rate.reset()
    return get_settings()


def _window_count(settings: Settings, tenant_id: str) -> int:
    item = dynamo.get(
        settings.usage_table,
        {"pk": f"RATE#{tenant_id}#{NOW.strftime('%Y%m%d%H%M')}", "sk": "SHARD#0"},
        consistent=True,
    )
    return int((item or {}).get("count", 0))


def test_a_basic_window_costs_one_write_per_ten_requests_and_holds_the_limit(
    settings: Settings,
) -> None:
    # Given a Basic tenant (1,000 requests per minute: chunks of 10)
    plan = catalog().plan("basic")

    # When one process admits its requests of one minute until refused
    with dynamodb_calls("UpdateItem") as writes:
        admitted = admitted_until_refused("t_chunks", plan, settings, NOW)

    # Then exactly the limit passed, the stored window says so, and it took 100 writes of 10
    # plus the refused chunk and the refused single slot
    assert admitted == 1000
    assert _window_count(settings, "t_chunks") == 1000
    assert [w["ExpressionAttributeValues"][":n"]["N"] for w in writes] == ["10"] * 101 + ["1"]


def test_a_process_gone_with_its_chunk_leaves_the_others_the_rest(settings: Settings) -> None:
    # Given a process that reserved a chunk of 10 of a Basic window and used 3 of it
    plan = catalog().plan("basic")
    take(3, "t_gone", plan, settings, NOW)
    assert _window_count(settings, "t_gone") == 10
    rate.reset()  # that process ends: its 7 unused slots go with it

    # When another process admits the tenant's requests in the same minute until refused
    admitted = admitted_until_refused("t_gone", plan, settings, NOW)

    # Then the window ends exactly at the limit, and the tenant lost the 7 (under one chunk)
    assert _window_count(settings, "t_gone") == 1000
    assert 3 + admitted == 1000 - 7
