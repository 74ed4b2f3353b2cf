"""logic/rate.py's shared minute window reserved in chunks, against an in-memory window store
(the conditional ``ADD n`` of ``dal/usage.take_rate_slot``, with its condition): one write per
chunk, the limit never exceeded, the window's last slots one at a time, slots of a past
minute never used."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from meterbridge.dal import usage as usage_dal
from meterbridge.errors import RateLimited
from meterbridge.logic import rate
from meterbridge.plans import catalog
from meterbridge.settings import Settings
from tests.support.rate import admitted_until_refused, take

MINUTE = datetime(2026, 12, 3, 18, 0, 5, tzinfo=UTC)
NEXT_MINUTE = datetime(2026, 12, 3, 18, 1, 5, tzinfo=UTC)


class FakeWindows:
    """Rate window shards in memory, written the way DynamoDB applies the conditional ADD."""

    def __init__(self) -> None:
        self.count: dict[tuple[str, str, int], int] = {}
        self.writes: list[int] = []  # n of each write tried
        self.refused = 0

    def take_rate_slot(
        self,
        table: str,
        tenant_id: str,
        minute: str,
        shard: int,
        cap: int,
        expires_at: int,
        n: int = 1,
    ) -> bool:
        assert 1 <= n <= cap
        self.writes.append(n)
        key = (tenant_id, minute, shard)
        if self.count.get(key, 0) + n > cap:
            self.refused += 1
            return False
        self.count[key] = self.count.get(key, 0) + n
        return True

    def total(self, tenant_id: str, minute: datetime) -> int:
        stamp = minute.strftime("%Y%m%d%H%M")
        return sum(v for (t, m, _), v in self.count.items() if t == tenant_id and m == stamp)


@pytest.fixture
def windows(monkeypatch: pytest.MonkeyPatch) -> FakeWindows:
    rate.reset()
    fake = FakeWindows()
    monkeypatch.setattr(usage_dal, "take_rate_slot", fake.take_rate_slot)
    return fake


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in ("TENANTS_TABLE", "EVENTS_TABLE", "USAGE_TABLE", "IDEMPOTENCY_TABLE"):
        monkeypatch.setenv(name, name.lower())
    return Settings()


def test_a_process_takes_its_window_in_chunks_and_never_past_the_limit(
    windows: FakeWindows, settings: Settings
) -> None:
    # Given Basic (1,000 requests per minute, one window item): chunks of 1% = 10 slots
    plan = catalog().plan("basic")
    assert rate.chunk_size(1000) == 10

    # When one process admits requests in one minute until refused
    admitted = admitted_until_refused("t_a", plan, settings, MINUTE)

    # Then exactly the limit passes, with one write per 10 requests (100, not 1,000), and the
    # refusal costs a refused chunk and a refused single slot
    assert admitted == 1000
    assert windows.total("t_a", MINUTE) == 1000
    assert windows.writes == [10] * 100 + [10, 1]
    assert windows.refused == 2

    # And the rest of that minute costs no write (the window is remembered as full)
    with pytest.raises(RateLimited):
        rate.take_shared("t_a", plan, settings, MINUTE)
    assert len(windows.writes) == 102


def test_the_last_slots_left_by_other_processes_go_one_at_a_time(
    windows: FakeWindows, settings: Settings
) -> None:
    # Given a Basic tenant whose window other processes have filled to 995 of 1,000
    plan = catalog().plan("basic")
    windows.count[("t_a", MINUTE.strftime("%Y%m%d%H%M"), 0)] = 995

    # When this process admits requests until refused
    admitted = admitted_until_refused("t_a", plan, settings, MINUTE)

    # Then its chunk of 10 does not fit, and the 5 slots left are taken singly: the window
    # holds exactly the limit
    assert admitted == 5
    assert windows.total("t_a", MINUTE) == 1000
    assert windows.writes == [10, 1, 1, 1, 1, 1, 1]


def test_a_reserved_slot_is_used_only_in_its_own_minute(
    windows: FakeWindows, settings: Settings
) -> None:
    # Given a Basic tenant that used 3 of the 10 slots it reserved this minute
    plan = catalog().plan("basic")
    take(3, "t_a", plan, settings, MINUTE)
    assert windows.writes == [10]

    # When its next request comes in the next minute
    rate.take_shared("t_a", plan, settings, NEXT_MINUTE)

    # Then it reserves a chunk of the new window; the 7 unused slots expired with theirs
    assert windows.writes == [10, 10]
    assert windows.total("t_a", NEXT_MINUTE) == 10


def test_what_a_lost_reservation_costs_is_at_most_a_chunk_per_process(
    windows: FakeWindows, settings: Settings
) -> None:
    # Given a process that reserved 10 slots of a Basic window and used 4 before it ended
    plan = catalog().plan("basic")
    take(4, "t_a", plan, settings, MINUTE)
    rate.reset()  # the process is gone with its 6 unused slots

    # When another process admits the tenant's requests in the same minute until refused
    admitted = admitted_until_refused("t_a", plan, settings, MINUTE)

    # Then the tenant got 6 fewer than its limit in that minute (under one chunk), never more
    assert 4 + admitted == 1000 - 6
    assert windows.total("t_a", MINUTE) == 1000


def test_small_plans_keep_one_write_per_request(windows: FakeWindows, settings: Settings) -> None:
    # Given Free (100 requests per minute): 1% is under one slot
    plan = catalog().plan("free")

    # When it admits requests until refused
    admitted = admitted_until_refused("t_a", plan, settings, MINUTE)

    # Then each request took its own slot, as before chunks
    assert admitted == 100
    assert windows.writes == [1] * 101


def test_sharded_windows_take_chunks_per_shard_and_hold_the_limit(
    windows: FakeWindows, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given Pro (10,000 requests per minute over 8 shards of 1,250): chunks of 12
    plan = catalog().plan("pro")
    shards = usage_dal.RATE_SHARDS
    cap = -(-plan.requests_per_minute // shards)
    assert rate.chunk_size(cap) == 12
    monkeypatch.setattr(rate, "random", random.Random(0))  # which shards are tried

    # When one process admits requests until refused (two full shards in a row)
    admitted = admitted_until_refused("t_a", plan, settings, MINUTE)

    # Then no shard and not the window ever passed its cap, and most of the window was used
    assert windows.total("t_a", MINUTE) == admitted <= plan.requests_per_minute
    assert max(windows.count.values()) <= cap
    assert admitted > plan.requests_per_minute * 0.9
    # And a request costs a twelfth of a write, plus the singles near the end
    assert len(windows.writes) < admitted / 10


def test_the_ingest_and_read_budgets_hold_their_own_chunks(
    windows: FakeWindows, settings: Settings
) -> None:
    # Given a Basic tenant that reserved a chunk of its ingest window
    plan = catalog().plan("basic")
    rate.take_shared("t_a", plan, settings, MINUTE)

    # When it reads its usage (the read budget)
    rate.take_shared("t_a", plan, settings, MINUTE, "read")

    # Then the read reserved a chunk of its own window, not one of ingest's slots
    assert windows.writes == [10, 10]
    assert set(windows.count) == {
        ("t_a", MINUTE.strftime("%Y%m%d%H%M"), 0),
        ("t_a#read", MINUTE.strftime("%Y%m%d%H%M"), 0),
    }


def test_a_slow_reservation_of_a_past_minute_leaves_the_next_minutes_slots_alone(
    windows: FakeWindows, settings: Settings
) -> None:
    # Given a Basic tenant holding 9 spare slots of the next minute
    plan = catalog().plan("basic")
    rate.take_shared("t_a", plan, settings, NEXT_MINUTE)

    # When a request of the minute before reserves its own chunk only now (a slow call)
    rate.take_shared("t_a", plan, settings, MINUTE)

    # Then the next minute's 9 still serve its next 9 requests without a write
    take(9, "t_a", plan, settings, NEXT_MINUTE)
    assert windows.writes == [10, 10]
