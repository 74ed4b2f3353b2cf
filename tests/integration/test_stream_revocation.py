"""Streams end when their authority does (real uvicorn, nats-server and moto over HTTP):
suspension and offboarding close a tenant's open streams at once (their NATS events), a
revoked key's streams close and its stream tokens stop working within the key-cache TTL,
and a tenant has at most its plan's ``max_streams`` open streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from meterbridge.dal import dynamo
from meterbridge.dal import keys as keys_dal
from meterbridge.dal import tenants as tenants_dal
from meterbridge.logic.keys import format as keys
from meterbridge.logic.keys import lifecycle as keys_lifecycle
from meterbridge.logic.tenants import lifecycle as tenants_logic
from meterbridge.settings import get_settings
from tests.support.builders import make_tenant
from tests.support.fixtures import reset_singletons
from tests.support.streams import (
    SSEEvent,
    SSEReader,
    auth,
    js_publish,
    stream_app_fixture,  # noqa: F401 - the stream_app fixture
    usage_event,
    wait_until,
)


@pytest.fixture
def short_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1 s key-cache TTL (the re-check period of open streams)."""
    monkeypatch.setenv("METERBRIDGE_KEY_CACHE_TTL_S", "1")
    reset_singletons()


@pytest.fixture
def long_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    """The longest TTL (60 s): a stream closed within the test's wait was closed by an event."""
    monkeypatch.setenv("METERBRIDGE_KEY_CACHE_TTL_S", "60")
    reset_singletons()


@pytest.fixture
async def short_app(short_ttl: None, stream_app: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    yield stream_app


@pytest.fixture
async def long_app(long_ttl: None, stream_app: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    yield stream_app


async def _until_closed(reader: SSEReader, timeout: float = 30.0) -> list[SSEEvent]:
    """Every event up to the end of the response (TimeoutError if it stays open)."""
    events: list[SSEEvent] = []

    async def read() -> None:
        while (event := await reader.next_event(timeout)) is not None:
            events.append(event)

    await asyncio.wait_for(read(), timeout)
    return events


def _lifecycle_tenant() -> tuple[str, str]:
    """``make_tenant`` with the profile version the lifecycle transitions check."""
    tenant_id, key = make_tenant()
    dynamo.update(
        get_settings().tenants_table,
        tenants_dal.profile_key(tenant_id),
        set_="SET version = :v",
        vals={":v": 1},
    )
    return tenant_id, key


def _revoke_elsewhere(key_id: str) -> None:
    """Revoke as another process would (the admin Lambda): no ``forget`` in this one."""
    keys_dal.update_key(get_settings().tenants_table, key_id, fields={"status": "revoked"})


async def test_a_revoked_keys_streams_close_and_its_tokens_stop_within_the_ttl(
    short_app: dict[str, Any],
) -> None:
    # Given a tenant with two keys: streams by bearer key and by token on key 1, one on key 2
    tenant_id, key1 = make_tenant()
    key2 = keys_lifecycle.issue(tenant_id).secret
    key1_id = keys.parse(key1).lookup_id  # type: ignore[union-attr]
    base, js, service = short_app["url"], short_app["js"], short_app["service"]
    async with httpx.AsyncClient(timeout=30) as http:
        token = (await http.post(f"{base}/v1/stream-tokens", headers=auth(key1))).json()["token"]
        url = f"{base}/v1/stream"
        async with (
            SSEReader(http, url, auth(key1)) as by_key,
            SSEReader(http, url, params={"token": token}) as by_token,
            SSEReader(http, url, auth(key2)) as other_key,
        ):
            await wait_until(lambda: service.hub.client_count == 3)

            # When key 1 is revoked by another process
            _revoke_elsewhere(key1_id)

            # Then both of key 1's streams end with a final "closed" event
            for reader in (by_key, by_token):
                events = await _until_closed(reader)
                assert [e.event for e in events] == ["closed"]
                assert events[0].json == {"reason": "key_revoked", "reconnect": False}
            # And key 2's stream stays open and live
            seq = await js_publish(js, tenant_id, usage_event(tenant_id, 1))
            got = await other_key.next_event()
            assert got is not None and got.id == str(seq)
            assert service.hub.client_count == 1

        # And key 1's token no longer opens a stream (it was accepted before the revocation)
        async def refused() -> bool:
            response = await http.get(url, params={"token": token})
            return response.status_code == 401 and response.json()["error"]["code"] == (
                "unauthorized"
            )

        deadline = asyncio.get_running_loop().time() + 30
        while not await refused():
            assert asyncio.get_running_loop().time() < deadline, "token still accepted"
            await asyncio.sleep(0.2)


async def test_suspension_closes_the_tenants_streams_at_once(long_app: dict[str, Any]) -> None:
    # Given two tenants streaming (key cache and re-check period 60 s)
    tenant_a, key_a = _lifecycle_tenant()
    tenant_b, key_b = make_tenant()
    base, js, service = long_app["url"], long_app["js"], long_app["service"]
    async with (
        httpx.AsyncClient(timeout=30) as http,
        SSEReader(http, f"{base}/v1/stream", auth(key_a)) as reader_a,
        SSEReader(http, f"{base}/v1/stream", auth(key_b)) as reader_b,
    ):
        await wait_until(lambda: service.hub.client_count == 2)

        # When A is suspended through the tenant logic (which publishes tenant.suspended)
        await tenants_logic.suspend(tenant_a)

        # Then A's stream gets the event, then "closed", and ends, well before any re-check
        events = await _until_closed(reader_a, timeout=30)
        assert [e.event for e in events] == ["tenant.suspended", "closed"]
        assert events[-1].json == {"reason": "tenant_suspended", "reconnect": False}
        # And B's stream is untouched
        seq = await js_publish(js, tenant_b, usage_event(tenant_b, 1))
        got = await reader_b.next_event()
        assert got is not None and got.id == str(seq)

        # And A cannot open a new one
        again = await http.get(f"{base}/v1/stream", headers=auth(key_a))
        assert again.status_code == 403
        assert again.json()["error"]["code"] == "tenant_suspended"


async def test_offboarding_closes_the_tenants_streams_at_once(long_app: dict[str, Any]) -> None:
    # Given a tenant streaming by key and by token
    tenant_id, key = _lifecycle_tenant()
    base, service = long_app["url"], long_app["service"]
    async with httpx.AsyncClient(timeout=30) as http:
        token = (await http.post(f"{base}/v1/stream-tokens", headers=auth(key))).json()["token"]
        async with (
            SSEReader(http, f"{base}/v1/stream", auth(key)) as by_key,
            SSEReader(http, f"{base}/v1/stream", params={"token": token}) as by_token,
        ):
            await wait_until(lambda: service.hub.client_count == 2)

            # When the tenant is offboarded (DELETE /admin/tenants/{id})
            await tenants_logic.offboard(tenant_id)

            # Then both streams end with "closed" (reason: offboarded)
            for reader in (by_key, by_token):
                events = await _until_closed(reader, timeout=30)
                assert events[-1].event == "closed"
                assert events[-1].json == {"reason": "tenant_offboarded", "reconnect": False}
            assert service.hub.client_count == 0


async def test_open_streams_are_capped_per_tenant_by_plan(stream_app: dict[str, Any]) -> None:
    # Given a Free tenant (max_streams 2) with two open streams, and a Basic tenant
    _, key = make_tenant(plan="free")
    _, other = make_tenant(plan="basic")
    base, service = stream_app["url"], stream_app["service"]
    url = f"{base}/v1/stream"
    async with httpx.AsyncClient(timeout=30) as http, SSEReader(http, url, auth(key)):
        async with SSEReader(http, url, auth(key)):
            await wait_until(lambda: service.hub.client_count == 2)

            # When a third stream is asked for
            third = await http.get(url, headers=auth(key))

            # Then 429 too_many_streams with Retry-After and the standard error body
            assert third.status_code == 429
            assert third.headers["content-type"].startswith("application/json")
            assert int(third.headers["retry-after"]) > 0
            error = third.json()["error"]
            assert error["code"] == "too_many_streams"
            assert error["details"] == {"max_streams": 2}
            assert "2 open streams" in error["message"]
            # And another tenant is not affected
            async with SSEReader(http, url, auth(other)) as fine:
                assert fine.response is not None and fine.response.status_code == 200

        # And once one stream is closed, a new one is accepted
        await wait_until(lambda: service.hub.client_count == 1)
        async with SSEReader(http, url, auth(key)) as again:
            assert again.response is not None and again.response.status_code == 200


async def test_concurrent_connects_cannot_overshoot_the_cap(stream_app: dict[str, Any]) -> None:
    # Given a Free tenant (max_streams 2) and no open stream
    tenant_id, key = make_tenant(plan="free")
    url, service = f"{stream_app['url']}/v1/stream", stream_app["service"]
    async with httpx.AsyncClient(timeout=30) as http:
        readers = [SSEReader(http, url, auth(key)) for _ in range(6)]

        # When six streams are asked for at once
        await asyncio.gather(*(r.__aenter__() for r in readers))
        try:
            codes = sorted(r.response.status_code for r in readers if r.response is not None)
            open_now = service.hub.tenant_client_count(tenant_id)
        finally:
            await asyncio.gather(*(r.__aexit__(None, None, None) for r in readers))

    # Then exactly two are open and four are refused with 429
    assert codes == [200, 200, 429, 429, 429, 429]
    assert open_now == 2
