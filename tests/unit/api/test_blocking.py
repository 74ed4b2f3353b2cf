"""api/blocking.py ``run_shared``: a tenant's identical reads waiting at its gate share one
read; each still does its own part; a read that has started is never joined."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from starlette.requests import Request

from meterbridge.api.blocking import run_shared
from meterbridge.errors import RateLimited
from meterbridge.logic import rate


@pytest.fixture(autouse=True)
def _fresh_gates() -> None:
    rate.reset()


def _request(tenant: str = "t_share", limit: int = 1) -> Request:
    state: dict[str, Any] = {"tenant_id": tenant, "max_in_flight": limit}
    return Request({"type": "http", "state": state})


class Counted:
    """``each`` and ``once`` that count their calls (from the thread pool)."""

    def __init__(self, fail_each_at: int | None = None) -> None:
        self.lock = threading.Lock()
        self.each_calls = 0
        self.once_calls = 0
        self.fail_each_at = fail_each_at

    def each(self) -> None:
        with self.lock:
            self.each_calls += 1
            n = self.each_calls
        if n == self.fail_each_at:
            raise RateLimited("more than 3 requests per minute", headers={"Retry-After": "5"})

    def once(self) -> dict[str, int]:
        with self.lock:
            self.once_calls += 1
            return {"report": self.once_calls}


async def _settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def _with_gate_held(tenant: str, calls: list[Any]) -> list[Any]:
    """Run ``calls`` (coroutines) while the tenant's only gate place is taken, then free it."""
    release = asyncio.Event()

    async def hold() -> None:
        async with rate.gate(tenant, 1):
            await release.wait()

    holder = asyncio.create_task(hold())
    await _settle()
    tasks = [asyncio.create_task(c) for c in calls]
    await _settle()
    release.set()
    await holder
    return await asyncio.gather(*tasks, return_exceptions=True)


async def test_identical_reads_waiting_at_the_gate_share_one_read() -> None:
    # Given a tenant whose gate is taken, and three identical reads waiting at it
    counted = Counted()
    calls = [run_shared(_request(), ("a",), counted.each, counted.once) for _ in range(3)]

    # When the gate frees
    answers = await _with_gate_held("t_share", calls)

    # Then one read answers all three, and each took its own part
    assert answers == [{"report": 1}] * 3
    assert counted.once_calls == 1 and counted.each_calls == 3


async def test_reads_of_other_keys_or_tenants_are_not_shared() -> None:
    counted = Counted()
    calls = [
        run_shared(_request(), ("a",), counted.each, counted.once),
        run_shared(_request(), ("b",), counted.each, counted.once),
        run_shared(_request("t_other"), ("a",), counted.each, counted.once),
    ]

    answers = await _with_gate_held("t_share", calls)

    assert sorted(a["report"] for a in answers) == [1, 2, 3]
    assert counted.once_calls == 3 and counted.each_calls == 3


async def test_a_member_refused_its_part_gets_its_error_and_the_others_the_read() -> None:
    # Given three identical waiting reads, the second of which is refused its slot
    counted = Counted(fail_each_at=2)
    calls = [run_shared(_request(), ("a",), counted.each, counted.once) for _ in range(3)]

    answers = await _with_gate_held("t_share", calls)

    assert answers[0] == answers[2] == {"report": 1}
    assert isinstance(answers[1], RateLimited)
    assert counted.once_calls == 1


async def test_a_read_that_has_started_is_not_joined() -> None:
    # Given a read running (its report blocked in its thread), the gate wide enough for two
    started, finish = threading.Event(), threading.Event()
    counted = Counted()

    def slow_once() -> dict[str, int]:
        started.set()
        finish.wait(timeout=30)
        return counted.once()

    first = asyncio.create_task(run_shared(_request(limit=2), ("a",), counted.each, slow_once))
    while not started.is_set():
        await asyncio.sleep(0.001)

    # When an identical read arrives
    second = asyncio.create_task(run_shared(_request(limit=2), ("a",), counted.each, counted.once))
    await _settle()
    finish.set()

    # Then it got a read of its own, which started after it arrived
    answers = await asyncio.gather(first, second)
    assert counted.once_calls == 2
    assert sorted(a["report"] for a in answers) == [1, 2]
