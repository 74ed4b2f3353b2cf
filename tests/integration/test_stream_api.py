"""The streaming service over HTTP (real uvicorn, real nats-server, moto over HTTP)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.builders import make_tenant
from tests.support.streams import (
    SSEReader,
    auth,
    js_publish,
    stream_app_fixture,  # noqa: F401 - the stream_app fixture
    usage_event,
    wait_until,
)


async def test_events_reach_only_their_tenant(stream_app: dict[str, Any]) -> None:
    # Given two tenants, each with a connected stream
    tenant_a, key_a = make_tenant()
    tenant_b, key_b = make_tenant()
    url, js = stream_app["url"] + "/v1/stream", stream_app["js"]
    async with (
        httpx.AsyncClient(timeout=30) as http,
        SSEReader(http, url, auth(key_a)) as reader_a,
        SSEReader(http, url, auth(key_b)) as reader_b,
    ):
        await wait_until(lambda: stream_app["service"].hub.client_count == 2)

        # When events are published for A, then for B
        seqs_a = [await js_publish(js, tenant_a, usage_event(tenant_a, n)) for n in range(3)]
        seqs_b = [await js_publish(js, tenant_b, usage_event(tenant_b, n)) for n in range(2)]
        got_a = await reader_a.take(3)
        got_b = await reader_b.take(2)

    # Then each sees its own events only, ids are the stream sequences, types the CE type
    assert reader_a.response is not None and reader_a.response.status_code == 200
    assert reader_a.retry == 3000
    assert [e.id for e in got_a] == [str(s) for s in seqs_a]
    assert [e.id for e in got_b] == [str(s) for s in seqs_b]
    assert {e.json["source"] for e in got_a} == {f"//meterbridge/tenants/{tenant_a}"}
    assert {e.json["source"] for e in got_b} == {f"//meterbridge/tenants/{tenant_b}"}
    assert {e.event for e in got_a + got_b} == {"api.request"}


async def test_stream_token_authenticates_an_eventsource(stream_app: dict[str, Any]) -> None:
    # Given a stream token issued for tenant A's key
    tenant_a, key_a = make_tenant()
    base, js = stream_app["url"], stream_app["js"]
    async with httpx.AsyncClient(timeout=30) as http:
        issued = await http.post(f"{base}/v1/stream-tokens", headers=auth(key_a))
        token = issued.json()["token"]

        # When a client streams with ?token= only (no Authorization header)
        async with SSEReader(http, f"{base}/v1/stream", params={"token": token}) as reader:
            await wait_until(lambda: stream_app["service"].hub.client_count == 1)
            seq = await js_publish(js, tenant_a, usage_event(tenant_a, 1))
            got = await reader.next_event()

        # Then it receives the tenant's events; the token response hides the key
        assert issued.status_code == 200
        assert key_a not in issued.text
        assert issued.json()["expires_in"] == 300
        assert got is not None and got.id == str(seq)


@pytest.mark.parametrize(
    ("headers", "params", "code"),
    [
        ({}, {}, "unauthorized"),
        ({"Authorization": "Bearer mb_test_nope"}, {}, "unauthorized"),
        ({}, {"token": "forged.token"}, "unauthorized"),
    ],
)
async def test_stream_refuses_bad_credentials(
    stream_app: dict[str, Any], headers: dict[str, str], params: dict[str, str], code: str
) -> None:
    # Given no, an unknown, or a forged credential
    async with httpx.AsyncClient(timeout=30) as http:
        # When the stream is requested
        response = await http.get(f"{stream_app['url']}/v1/stream", headers=headers, params=params)

    # Then it is refused with the JSON error body
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code


async def test_suspended_tenant_cannot_stream(stream_app: dict[str, Any]) -> None:
    # Given a suspended tenant
    _, key = make_tenant(status="suspended")
    async with httpx.AsyncClient(timeout=30) as http:
        # When it asks for a stream
        response = await http.get(f"{stream_app['url']}/v1/stream", headers=auth(key))

    # Then 403
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "tenant_suspended"


async def test_last_event_id_resumes_without_gap_or_duplicate(stream_app: dict[str, Any]) -> None:
    # Given a client that read 2 of 5 events, then disconnected, while B's events interleave
    tenant_a, key_a = make_tenant()
    tenant_b, _ = make_tenant()
    url, js, service = stream_app["url"] + "/v1/stream", stream_app["js"], stream_app["service"]
    async with httpx.AsyncClient(timeout=30) as http:
        async with SSEReader(http, url, auth(key_a)) as reader:
            await wait_until(lambda: service.hub.client_count == 1)
            seqs = []
            for n in range(5):
                seqs.append(await js_publish(js, tenant_a, usage_event(tenant_a, n)))
                await js_publish(js, tenant_b, usage_event(tenant_b, n))
            first_two = await reader.take(2)
        await wait_until(lambda: service.hub.client_count == 0)
        more = await js_publish(js, tenant_a, usage_event(tenant_a, 5))

        # When it reconnects with Last-Event-ID (header), and another with ?last_event_id=
        async with SSEReader(http, url, {**auth(key_a), "Last-Event-ID": first_two[-1].id}) as r1:
            resumed = await r1.take(4)
        async with SSEReader(
            http, url, auth(key_a), params={"last_event_id": first_two[-1].id}
        ) as r2:
            resumed_q = await r2.take(4)

    # Then both get exactly the events after it, in order
    expected = [str(s) for s in [*seqs[2:], more]]
    assert [e.id for e in resumed] == expected
    assert [e.id for e in resumed_q] == expected


async def test_resume_from_jetstream_beyond_the_buffer(
    stream_app: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given events, and a replay buffer that no longer covers the client's id
    tenant_a, key_a = make_tenant()
    url, js, service = stream_app["url"] + "/v1/stream", stream_app["js"], stream_app["service"]
    seqs = [await js_publish(js, tenant_a, usage_event(tenant_a, n)) for n in range(4)]
    await wait_until(lambda: service.bridge.position[0] >= seqs[-1])
    monkeypatch.setattr(service.hub, "floor", (seqs[-1], 0))

    # When the client resumes after the first event
    async with (
        httpx.AsyncClient(timeout=30) as http,
        SSEReader(http, url, {**auth(key_a), "Last-Event-ID": str(seqs[0])}) as reader,
    ):
        replayed = await reader.take(3)
        await wait_until(lambda: service.hub.client_count == 1)
        live = await js_publish(js, tenant_a, usage_event(tenant_a, 9))
        after = await reader.next_event()

    # Then JetStream replays the rest, and live delivery follows without gap or duplicate
    assert [e.id for e in replayed] == [str(s) for s in seqs[1:]]
    assert after is not None and after.id == str(live)


async def test_ids_older_than_retention_or_unknown_get_a_reset(
    stream_app: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a purged stream (events older than retention are gone)
    tenant_a, key_a = make_tenant()
    url, js, service = stream_app["url"] + "/v1/stream", stream_app["js"], stream_app["service"]
    old = [await js_publish(js, tenant_a, usage_event(tenant_a, n)) for n in range(3)]
    await js.purge_stream("METERBRIDGE")
    kept = await js_publish(js, tenant_a, usage_event(tenant_a, 3))
    await wait_until(lambda: service.bridge.position[0] >= kept)
    monkeypatch.setattr(service.hub, "floor", (kept, 0))

    async with httpx.AsyncClient(timeout=30) as http:
        # When a client resumes from a purged id, from a future id, and from garbage
        async with SSEReader(http, url, {**auth(key_a), "Last-Event-ID": str(old[0])}) as r:
            expired = await r.take(2)
        async with SSEReader(http, url, {**auth(key_a), "Last-Event-ID": "999999"}) as r:
            unknown = await r.take(1)
        async with SSEReader(http, url, {**auth(key_a), "Last-Event-ID": "abc"}) as r:
            invalid = await r.take(1)

    # Then each gets a reset event (no id) first; the expired one then gets what is retained
    assert expired[0].event == "reset" and expired[0].id is None
    assert expired[0].json["reason"] == "expired"
    assert expired[0].json["first_available_id"] == str(kept)
    assert expired[1].id == str(kept)
    assert unknown[0].event == "reset" and unknown[0].json["reason"] == "unknown_id"
    assert invalid[0].event == "reset" and invalid[0].json["reason"] == "invalid_id"


async def test_health_and_metrics_report_the_bridge(stream_app: dict[str, Any]) -> None:
    # Given a running streaming service connected to NATS
    async with httpx.AsyncClient(timeout=30) as http:
        # When health and metrics are read
        live = await http.get(f"{stream_app['url']}/health/live")
        ready = await http.get(f"{stream_app['url']}/health/ready")
        metrics = await http.get(f"{stream_app['url']}/metrics")

    # Then the bridge's connection and breaker state are reported under meterbridge_ names
    assert live.status_code == 200
    bridge = ready.json()["components"]["stream_bridge"]
    assert bridge["status"] == "up" and bridge["breaker"] == "closed"
    for name in (
        "meterbridge_nats_circuit_state 0.0",
        "meterbridge_sse_clients_connected",
        "meterbridge_nats_fallback_active 0.0",
        "meterbridge_stream_delivery_latency_seconds_bucket",
        "meterbridge_sse_clients_dropped_total",
    ):
        assert name in metrics.text
