"""Best-effort publishing to a real nats-server with JetStream."""

from __future__ import annotations

import asyncio

import nats

from meterbridge.bus.publisher import Message, NatsPublisher
from meterbridge.bus.subjects import STREAM_NAME, tenant_subject
from meterbridge.resilience import BreakerState
from meterbridge.settings import Settings
from meterbridge_dev.stack.processes import NatsServer


async def _stream_messages(url: str) -> int:
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info(STREAM_NAME)
        return int(info.state.messages)
    finally:
        await nc.close()


async def test_publish_creates_the_stream_and_dedupes_by_msg_id(nats_server: NatsServer) -> None:
    # Given a publisher pointed at a fresh JetStream server
    pub = NatsPublisher(Settings())
    msgs = [Message(tenant_subject("t_a", "usage"), f"src#{i}", {"i": i}) for i in range(5)]
    # When the same five messages are published twice (a retry)
    first = await pub.publish(msgs)
    again = await pub.publish(msgs)
    # Then every publish was acknowledged, but the stream holds each message once
    assert first == again == {m.msg_id for m in msgs}
    assert await _stream_messages(nats_server.url) == 5


def test_publish_never_raises_and_opens_the_breaker_when_nats_is_down(
    nats_server: NatsServer,
) -> None:
    # Given a publisher that worked, then a nats-server killed with -9
    pub = NatsPublisher(Settings())
    msg = [Message(tenant_subject("t_a", "usage"), "src#x", {"x": 1})]
    assert pub.publish_sync(msg) == {"src#x"}
    nats_server.kill()
    # When publishing keeps failing
    results = [pub.publish_sync(msg) for _ in range(4)]
    # Then nothing raised, nothing was acknowledged, and the breaker is open
    assert results == [set()] * 4
    assert pub.breaker.state is BreakerState.OPEN


def test_disabled_nats_publishes_nothing() -> None:
    # Given NATS disabled (the test environment default)
    pub = NatsPublisher(Settings())
    # When / Then
    assert asyncio.run(pub.publish([Message("meterbridge.tenant.t.usage", "a", {})])) == set()


async def test_publish_sync_delivers_when_called_inside_a_running_loop(
    nats_server: NatsServer,
) -> None:
    # Given a synchronous caller that runs inside an event loop (an in-process flush under a
    # browser test's driver): its private loop cannot run in this thread
    pub = NatsPublisher(Settings())
    msgs = [Message(tenant_subject("t_a", "usage"), f"src#loop-{i}", {"i": i}) for i in range(3)]
    try:
        # When it publishes synchronously
        acked = pub.publish_sync(msgs)
    finally:
        pub.close()
    # Then every message was acknowledged and is in the stream, instead of a coroutine that
    # was never awaited and a publish silently lost
    assert acked == {m.msg_id for m in msgs}
    assert await _stream_messages(nats_server.url) == 3
