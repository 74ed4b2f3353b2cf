"""api/tenant_auth.py: the requests that bring the same key not yet cached share its lookup."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from starlette.requests import Request

from meterbridge.api import tenant_auth
from meterbridge.errors import Unauthorized
from meterbridge.models.principal import TenantPrincipal

PRINCIPAL = TenantPrincipal(tenant_id="t_look", key_id="k_look", plan="basic", status="active")


class Lookups:
    """``authenticate`` held until released, counting its calls per key."""

    def __init__(self) -> None:
        self.calls: dict[str | None, int] = {}
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, key: str | None) -> TenantPrincipal:
        self.calls[key] = self.calls.get(key, 0) + 1
        self.started.set()
        self.release.wait(timeout=30)
        if key == "mb_bad":
            raise Unauthorized("invalid API key")
        return PRINCIPAL


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> Lookups:
    fake = Lookups()
    monkeypatch.setattr(tenant_auth, "authenticate", fake)
    return fake


def _request() -> Request:
    state: dict[str, Any] = {}
    return Request({"type": "http", "state": state})


async def _started(lookups: Lookups) -> None:
    while not lookups.started.is_set():
        await asyncio.sleep(0.001)


async def test_a_new_keys_burst_costs_one_lookup(lookups: Lookups) -> None:
    # Given a lookup of a key under way
    first = asyncio.create_task(tenant_auth._authenticate(_request(), "mb_new"))
    await _started(lookups)

    # When four more requests bring the same key meanwhile, then it ends
    more = [asyncio.create_task(tenant_auth._authenticate(_request(), "mb_new")) for _ in range(4)]
    await asyncio.sleep(0.01)
    lookups.release.set()

    # Then all five have the principal from one lookup
    assert await asyncio.gather(first, *more) == [PRINCIPAL] * 5
    assert lookups.calls == {"mb_new": 1}


async def test_a_refused_lookup_is_every_waiting_requests_answer(lookups: Lookups) -> None:
    tasks = [asyncio.create_task(tenant_auth._authenticate(_request(), "mb_bad")) for _ in range(3)]
    await _started(lookups)
    lookups.release.set()

    answers = await asyncio.gather(*tasks, return_exceptions=True)

    assert all(isinstance(a, Unauthorized) for a in answers)
    assert lookups.calls == {"mb_bad": 1}


async def test_a_request_cancelled_while_it_waits_leaves_the_lookup_to_the_rest(
    lookups: Lookups,
) -> None:
    first = asyncio.create_task(tenant_auth._authenticate(_request(), "mb_new"))
    await _started(lookups)
    second = asyncio.create_task(tenant_auth._authenticate(_request(), "mb_new"))
    await asyncio.sleep(0.01)

    first.cancel()
    lookups.release.set()

    assert await second == PRINCIPAL
    assert first.cancelled()
    assert lookups.calls == {"mb_new": 1}


async def test_a_lookup_that_ended_is_not_reused(lookups: Lookups) -> None:
    lookups.release.set()
    assert await tenant_auth._authenticate(_request(), "mb_new") == PRINCIPAL
    await asyncio.sleep(0)  # its done-callback forgets it
    assert await tenant_auth._authenticate(_request(), "mb_new") == PRINCIPAL
    assert lookups.calls == {"mb_new": 2}
