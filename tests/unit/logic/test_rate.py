"""logic/rate.py without I/O: the token bucket (explicit clock values) and the gate."""

from __future__ import annotations

import itertools

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


async def test_the_gate_runs_at_most_the_limit_of_one_tenant_at_once() -> None:
    # Given a gate of 2 places
    import asyncio

    running = {"a": 0, "b": 0}
    peak = {"a": 0, "b": 0}
    release = asyncio.Event()

    async def work(tenant: str) -> None:
        async with rate.gate(tenant, 2):
            running[tenant] += 1
            peak[tenant] = max(peak[tenant], running[tenant])
            await release.wait()
            running[tenant] -= 1

    # When tenant a starts 6 calls and tenant b one
    tasks = [asyncio.create_task(work("a")) for _ in range(6)]
    tasks.append(asyncio.create_task(work("b")))
    for _ in range(10):
        await asyncio.sleep(0)

    # Then 2 of a's run and the rest wait, and b is not held up by them
    assert running == {"a": 2, "b": 1}
    release.set()
    await asyncio.gather(*tasks)
    assert peak == {"a": 2, "b": 1}


def test_max_in_flight_follows_the_plan_rate() -> None:
    assert rate.max_in_flight(catalog().plan("free")) == rate.MIN_IN_FLIGHT
    assert rate.max_in_flight(catalog().plan("pro")) == 17  # 166.7/s x 0.1 s


def test_take_local_says_when_a_tenant_is_spending_its_burst() -> None:
    # Given a Free tenant (a bucket of MIN_BURST tokens)
    plan = catalog().plan("free")
    capacity = int(rate.MIN_BURST)

    # When it spends its bucket at once
    answers = [rate.take_local("t_burst", plan, now=0.0) for _ in range(capacity)]

    # Then the first tenth (2 of 20) is steady and the rest (below 90% full) is its burst
    assert rate.BURSTING_BELOW == 0.9
    assert answers == [False] * 2 + [True] * (capacity - 2)


async def test_a_bursting_tenant_runs_one_call_at_a_time_while_another_tenant_works() -> None:
    # Given tenant a spending its burst (gate of 4) and tenant b steady
    import asyncio

    running = {"a": 0, "b": 0}
    peak = {"a": 0, "b": 0}
    release = {"a": asyncio.Event(), "b": asyncio.Event()}

    async def work(tenant: str, bursting: bool) -> None:
        async with rate.gate(tenant, 4, bursting):
            running[tenant] += 1
            peak[tenant] = max(peak[tenant], running[tenant])
            await release[tenant].wait()
            running[tenant] -= 1

    async def settle() -> None:
        for _ in range(10):
            await asyncio.sleep(0)

    # When b has a call running and a sends 6
    b_task = asyncio.create_task(work("b", False))
    await settle()
    a_tasks = [asyncio.create_task(work("a", True)) for _ in range(6)]
    await settle()

    # Then a runs one at a time beside b, and a steady call of b still starts at once
    assert running == {"a": 1, "b": 1}
    b_more = asyncio.create_task(work("b", False))
    await settle()
    assert running == {"a": 1, "b": 2}

    # When b's work is done, a (alone now) runs up to its gate
    release["b"].set()
    await asyncio.gather(b_task, b_more)
    await settle()
    assert running["a"] == 4
    release["a"].set()
    await asyncio.gather(*a_tasks)
    assert peak == {"a": 4, "b": 2}


async def test_a_call_cancelled_while_it_waits_gives_its_turn_away() -> None:
    # Given a steady tenant at its gate of 1, with one more call waiting, and a bursting one
    import asyncio

    release = asyncio.Event()
    started: list[str] = []

    async def work(tenant: str, bursting: bool) -> None:
        async with rate.gate(tenant, 1, bursting):
            started.append(tenant)
            await release.wait()

    first = asyncio.create_task(work("b", False))
    await asyncio.sleep(0)
    waiting = asyncio.create_task(work("b", False))
    burst = [asyncio.create_task(work("a", True)) for _ in range(2)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert started == ["b", "a"]  # a: one at a time while b runs and waits

    # When b's waiting call is cancelled and b's first call ends
    waiting.cancel()
    release.set()
    await asyncio.gather(first, *burst)

    # Then the cancelled call never ran and a's second call did
    assert started == ["b", "a", "a"]
    assert waiting.cancelled()


async def test_a_bursting_tenant_beside_another_starts_at_most_at_its_plan_rate() -> None:
    # Given tenant b with a call running, and tenant a bursting, paced at 50 ms
    import asyncio

    loop = asyncio.get_running_loop()
    release_b = asyncio.Event()
    starts: list[float] = []

    async def steady() -> None:
        async with rate.gate("b", 4):
            await release_b.wait()

    async def burst() -> None:
        async with rate.gate("a", 4, True, 0.05):
            starts.append(loop.time())

    b_task = asyncio.create_task(steady())
    await asyncio.sleep(0)

    # When a sends 3 calls, each done at once
    await asyncio.gather(*(burst() for _ in range(3)))

    # Then each started at least a pace after the one before (the timer, not b, woke them)
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert len(gaps) == 2 and min(gaps) >= 0.05

    # When b's work ends, a alone is not paced: 3 held calls all run at once
    release_b.set()
    await b_task
    hold = asyncio.Event()
    running = 0

    async def held() -> None:
        nonlocal running
        async with rate.gate("a", 4, True, 0.05):
            running += 1
            await hold.wait()

    tasks = [asyncio.create_task(held()) for _ in range(3)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert running == 3
    hold.set()
    await asyncio.gather(*tasks)
