"""The NATS bridge under ``kill -9`` of nats-server, then a restart on the same store."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from meterbridge.bus.subjects import tenant_subject
from meterbridge.resilience import BreakerState
from tests.support.builders import make_tenant
from tests.support.streams import (
    SSEReader,
    auth,
    js_publish,
    msg_id,
    on_server_loop,
    stream_app_fixture,  # noqa: F401 - the stream_app fixture
    usage_event,
    wait_until,
)


async def test_kill_nats_mid_stream_then_restart_delivers_every_event_once(
    stream_app: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two connected clients of one tenant that received three JetStream events
    tenant, key = make_tenant()
    url, js, service = stream_app["url"] + "/v1/stream", stream_app["js"], stream_app["service"]
    bridge, nats_server = service.bridge, stream_app["nats"]
    run = "chaos"
    before = [usage_event(tenant, n, run) for n in range(3)]
    outage = [usage_event(tenant, n, run) for n in range(3, 6)]
    after = [usage_event(tenant, n, run) for n in range(6, 8)]
    async with httpx.AsyncClient(timeout=60) as http:
        async with SSEReader(http, url, auth(key)) as stays:
            async with SSEReader(http, url, auth(key)) as leaves:
                await wait_until(lambda: service.hub.client_count == 2)
                for event in before:
                    await js_publish(js, tenant, event)
                got_stays = await stays.take(3)
                got_leaves = await leaves.take(3)

                # When nats-server is killed (-9) mid-stream
                nats_server.kill()
                await wait_until(lambda: not bridge.connected)
                await wait_until(lambda: bridge.breaker.state is not BreakerState.CLOSED)
                # ... in-process publishers keep going through the fallback bus
                acked = [
                    await on_server_loop(
                        service,
                        bridge.publish(tenant_subject(tenant, "usage"), e.wire(), msg_id(e)),
                    )
                    for e in outage
                ]
                got_stays += await stays.take(3)
                got_leaves += await leaves.take(2)
            # ... one client leaves during the outage after two of the three fallback events
            await wait_until(lambda: service.hub.client_count == 1)
            resume_from = got_leaves[-1].id

            # ... nats-server restarts on the same store; the outbox flush republishes the
            # fallback events with the same Nats-Msg-Id, and new events follow
            nats_server.start()
            await wait_until(lambda: bridge.connected)
            js = stream_app["js"]
            for event in outage:
                await js_publish(js, tenant, event)
            for event in after:
                await js_publish(js, tenant, event)
            got_stays += await stays.take(2)

        # ... and the client that left reconnects with Last-Event-ID (from the buffer), and
        # another one from JetStream itself (the buffer made not to cover it)
        async with SSEReader(http, url, {**auth(key), "Last-Event-ID": resume_from}) as back:
            got_leaves += await back.take(3)
        monkeypatch.setattr(service.hub, "floor", bridge.position)
        async with SSEReader(http, url, {**auth(key), "Last-Event-ID": resume_from}) as back2:
            from_js = await back2.take(3)

    # Then the staying client stayed on one connection and got every event exactly once
    everything = [e.id for e in before + outage + after]
    assert [e.json["id"] for e in got_stays] == everything
    assert len({e.id for e in got_stays}) == len(got_stays)
    # ... the fallback events had fallback ids and did not reach JetStream then
    assert acked == [False, False, False]
    assert [e.id.count(".") for e in got_stays[3:6]] == [1, 1, 1]
    # ... the breaker opened, then closed again
    states = [state for state, _ in bridge.transitions]
    assert "open" in states and states[-1] == "closed"
    assert bridge.breaker.state is BreakerState.CLOSED
    # ... the client that reconnected with Last-Event-ID ends with every event exactly once
    assert [e.json["id"] for e in got_leaves] == everything
    assert [e.json["id"] for e in got_leaves[:5] + from_js] == everything
