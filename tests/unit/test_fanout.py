"""The fan-out hub: frames, ids, bounded queues, replay buffer, heartbeats (no network)."""

from __future__ import annotations

import json

import pytest

from meterbridge.streaming.fanout import (
    HEARTBEAT_FRAME,
    FanoutHub,
    StreamEvent,
    control_frame,
    encode_frame,
    format_id,
    parse_id,
)


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
