"""The fan-out hub: frames, ids, bounded queues, replay buffer, heartbeats (no network)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from nats.aio.msg import Msg

from meterbridge_streaming.bridge import _seq_and_time
from meterbridge_streaming.fanout import (
    HEARTBEAT_FRAME,
    FanoutHub,
    StreamEvent,
    control_frame,
    encode_frame,
    format_id,
    parse_id,
)
from meterbridge_streaming.metrics import REGISTRY


def _event(seq: int, tenant: str = "t1", n: int = 0, payload: bytes | None = None) -> StreamEvent:
    return StreamEvent(
        position=(seq, n),
        tenant_id=tenant,
        kind="usage",
        event_type="api.request",
        payload=payload or json.dumps({"id": f"e{seq}.{n}", "type": "api.request"}).encode(),
        stored_at=0.0,
        msg_id=f"m{seq}.{n}",
        origin="jetstream" if n == 0 else "fallback",
    )


def _hub(queue: int = 10, ring: int = 100) -> FanoutHub:
    return FanoutHub(queue_size=queue, replay_buffer=ring, heartbeat_s=15)


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("42", (42, 0)),
        ("42.3", (42, 3)),
        (" 7 ", (7, 0)),
        ("abc", None),
        ("4.x", None),
        ("-1", None),
        ("", None),
        (None, None),
        ("1" * 50, None),
    ],
)
def test_ids_parse_back_to_positions(text: str | None, position: tuple[int, int] | None) -> None:
    # Given an id text / When parsed / Then the position (or None), and it formats back
    assert parse_id(text) == position
    if position is not None:
        assert parse_id(format_id(position)) == position


def test_frame_is_id_event_data_on_single_lines() -> None:
    # Given an event whose JSON payload is pretty-printed over several lines
    event = _event(5, payload=b'{\n  "id": "x",\n  "type": "api.request"\n}')

    # When encoded
    frame = encode_frame(event)

    # Then one data line, the id and event fields, and a blank line at the end
    assert frame == b'id: 5\nevent: api.request\ndata: {"id":"x","type":"api.request"}\n\n'


def test_control_frames_have_no_id_and_may_set_retry() -> None:
    # Given / When
    frame = control_frame("shutdown", {"reconnect": True}, retry_ms=1000)

    # Then
    assert frame == b'retry: 1000\nevent: shutdown\ndata: {"reconnect":true}\n\n'
    assert b"id:" not in frame


async def test_each_event_is_encoded_once_and_reaches_only_its_tenant() -> None:
    # Given two clients of t1 and one of t2
    hub = _hub()
    a1, a2 = hub.register("t1", (0, 0)), hub.register("t1", (0, 0))
    b1 = hub.register("t2", (0, 0))

    # When one t1 event is dispatched
    hub.dispatch(_event(1, "t1"))
    batch_a1, batch_a2 = await a1.next_batch(), await a2.next_batch()

    # Then both t1 clients hold the very same frame object; t2's client nothing
    assert batch_a1 is not None and batch_a2 is not None
    assert batch_a1[0][1] is batch_a2[0][1]
    assert b1._buf == type(b1._buf)()


async def test_a_full_queue_drops_only_that_client_with_a_reason() -> None:
    # Given a client that never reads and one that does, queues of 3
    hub = _hub(queue=3)
    slow, fast = hub.register("t1", (0, 0)), hub.register("t1", (0, 0))

    # When 10 events are dispatched, the fast client reading after each
    got = []
    for seq in range(1, 11):
        hub.dispatch(_event(seq))
        batch = await fast.next_batch()
        assert batch is not None
        got += batch

    # Then the slow one is closed as slow_consumer (queue emptied); the fast one has all 10
    assert slow.closed == "slow_consumer"
    assert await slow.next_batch() is None
    assert len(got) == 10 and fast.closed is None


async def test_buffer_replays_after_a_position_when_it_covers_it() -> None:
    # Given a hub whose buffer starts after seq 0 and holds 5 events of two tenants
    hub = _hub(ring=4)
    hub.set_floor((0, 0))
    for seq in range(1, 4):
        hub.dispatch(_event(seq, "t1"))
    hub.dispatch(_event(3, "t1", n=1))  # a fallback event after seq 3
    hub.dispatch(_event(4, "t2"))

    # When the buffer is asked for t1 after (1, 0) up to (4, 0), and after a position it
    # no longer covers (the oldest entry was evicted: floor moved to (1, 0))
    replay = hub.buffered_after("t1", (1, 0), (4, 0))
    too_old = hub.buffered_after("t1", (0, 0), (4, 0))

    # Then the later t1 events, in order, fallback one included; None when not covered
    assert replay is not None
    assert [f.split(b"\n", 1)[0] for _, f in replay] == [b"id: 2", b"id: 3", b"id: 3.1"]
    assert hub.floor == (1, 0)
    assert too_old is None


async def test_live_frames_up_to_skip_until_are_skipped() -> None:
    # Given a client ahead of this task (it already has up to seq 5)
    hub = _hub()
    client = hub.register("t1", (3, 0))
    client.skip_until = (5, 0)

    # When seqs 4..6 arrive live
    for seq in (4, 5, 6):
        hub.dispatch(_event(seq))
    batch = await client.next_batch()

    # Then only 6 is queued
    assert batch is not None and [f.split(b"\n", 1)[0] for _, f in batch] == [b"id: 6"]


async def test_heartbeat_goes_only_to_idle_clients_and_close_all_ends_everyone() -> None:
    # Given two clients, one of which just got an event
    hub = _hub()
    busy, idle = hub.register("t1", (0, 0)), hub.register("t2", (0, 0))
    hub.dispatch(_event(1, "t1"))
    await busy.next_batch()

    # When a heartbeat tick runs, then everyone is closed for shutdown
    hub.beat()
    idle_batch = await idle.next_batch()
    hub.close_all("shutdown")

    # Then only the idle client got a comment frame; both end after draining
    assert idle_batch == [(0.0, HEARTBEAT_FRAME)]
    assert busy._buf == type(busy._buf)()
    assert await busy.next_batch() is None and await idle.next_batch() is None
    assert busy.closed == idle.closed == "shutdown"
    hub.unregister(busy)
    hub.unregister(idle)
    assert hub.client_count == 0


class _Socket:
    """An ASGI ``send`` stand-in: takes body chunks at once, or waits while ``full``."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.full: asyncio.Future[None] | None = None
        self.fail = False

    async def send(self, message: dict[str, Any]) -> None:
        if self.full is not None:
            await self.full
        if self.fail:
            raise RuntimeError("send failed")
        self.chunks.append(message["body"])

    def writer(self, data: bytes) -> Any:
        return self.send({"type": "http.response.body", "body": data, "more_body": True})


def _sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def test_caught_up_clients_are_written_by_dispatch_and_counted_once_per_fanout() -> None:
    # Given two caught-up (direct) clients of t1 and a queued one
    hub = _hub()
    sockets = [_Socket(), _Socket()]
    direct = [hub.register("t1", (0, 0)) for _ in sockets]
    for client, sock in zip(direct, sockets, strict=True):
        client.go_direct(sock.writer)
    queued = hub.register("t1", (0, 0))
    delivered = _sample("meterbridge_sse_events_delivered_total")
    observed = _sample("meterbridge_stream_delivery_latency_seconds_count")

    # When two events are dispatched
    hub.dispatch(_event(1))
    hub.dispatch(_event(2))

    # Then the direct clients' sockets hold both frames (the very same objects) with no task
    # run, the queued one has them queued, and the metrics count 2 writes per event and
    # one latency observation per event
    assert sockets[0].chunks == sockets[1].chunks and len(sockets[0].chunks) == 2
    assert sockets[0].chunks[0] is sockets[1].chunks[0]
    assert [f for _, f in queued.take_queued()] == sockets[0].chunks
    assert _sample("meterbridge_sse_events_delivered_total") == delivered + 4
    assert _sample("meterbridge_stream_delivery_latency_seconds_count") == observed + 2


async def test_a_write_that_would_wait_goes_to_the_clients_task_and_later_frames_queue() -> None:
    # Given a direct client whose socket is full
    hub = _hub()
    sock = _Socket()
    client = hub.register("t1", (0, 0))
    client.go_direct(sock.writer)
    sock.full = asyncio.get_running_loop().create_future()

    # When three events are dispatched, then the socket drains and the client's task
    # finishes the stalled write and writes what queued meanwhile
    for seq in (1, 2, 3):
        hub.dispatch(_event(seq))
    stalled = client.take_stalled()
    assert stalled is not None and client.writer is None and not sock.chunks
    sock.full.set_result(None)
    await stalled[2]
    queued = client.take_queued()

    # Then nothing is lost or reordered, and the client can go direct again
    ids = [c.split(b"\n", 1)[0] for c in sock.chunks + [f for _, f in queued]]
    assert ids == [b"id: 1", b"id: 2", b"id: 3"]
    client.go_direct(sock.writer)
    assert client.writer is not None


async def test_a_stalled_write_is_cancelled_with_the_clients_task() -> None:
    # Given a direct client whose write stalled, its task awaiting the rest of the write
    hub = _hub()
    sock = _Socket()
    client = hub.register("t1", (0, 0))
    client.go_direct(sock.writer)
    sock.full = asyncio.get_running_loop().create_future()
    hub.dispatch(_event(1))
    stalled = client.take_stalled()
    assert stalled is not None
    rest = stalled[2]

    async def finish() -> None:
        await rest

    task = asyncio.create_task(finish())
    await asyncio.sleep(0)

    # When the task is cancelled (the stalled-write guard)
    task.cancel()
    result = await asyncio.gather(task, return_exceptions=True)

    # Then the cancellation reached the write and nothing was written
    assert isinstance(result[0], asyncio.CancelledError)
    assert sock.chunks == []


async def test_a_failing_write_closes_only_that_client() -> None:
    # Given two direct clients, one whose send raises
    hub = _hub()
    bad, good = _Socket(), _Socket()
    bad.fail = True
    clients = [hub.register("t1", (0, 0)), hub.register("t1", (0, 0))]
    clients[0].go_direct(bad.writer)
    clients[1].go_direct(good.writer)

    # When an event is dispatched
    hub.dispatch(_event(1))

    # Then the failing client is closed with its error kept (its task re-raises it); the
    # other got the frame
    assert clients[0].closed == "error" and isinstance(clients[0].error, RuntimeError)
    assert len(good.chunks) == 1 and clients[1].closed is None


@pytest.mark.parametrize(
    "reply",
    [
        "$JS.ACK.METERBRIDGE.c1.1.42.7.1700000000123456789.3",
        "$JS.ACK._.ACC.METERBRIDGE.c1.1.42.7.1700000000123456789.3.x9",
        "$JS.ACK.hub.ACC.METERBRIDGE.c1.1.42.7.1700000000123456789.3",
    ],
)
def test_sequence_and_store_time_match_the_nats_client_metadata(reply: str) -> None:
    # Given a JetStream reply subject (v1, v2, v2 with a domain)
    msg = Msg(_client=None, subject="meterbridge.tenant.t1.usage", reply=reply)  # type: ignore[arg-type]

    # When read by the bridge
    seq, stored_at = _seq_and_time(msg)

    # Then the same as the nats client's own parse
    assert seq == msg.metadata.sequence.stream
    assert stored_at == pytest.approx(msg.metadata.timestamp.timestamp(), abs=1e-6)
