"""meterbridge-client's own rules, with the HTTP answers scripted (httpx.MockTransport): ids,
buffer policies, flush triggers, retries and the split of a refused batch."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import pytest
from meterbridge_client import AsyncClient, Client, RejectedEvent, uuid7
from meterbridge_client._core import backoff

WAIT_S = 60.0


class Server:
    """A scripted ``/v1/events``: ``answer(events) -> (status, body, headers)``; records batches."""

    def __init__(self, answer: Callable[[list[dict[str, Any]]], tuple[int, Any, dict[str, str]]]):
        self.answer = answer
        self.batches: list[list[dict[str, Any]]] = []
        self.sizes: list[int] = []
        self.lock = threading.Lock()

    def handler(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/events"
        assert request.headers["authorization"] == "Bearer mb_test_key"
        assert request.headers["content-type"] == "application/cloudevents-batch+json"
        events = json.loads(request.content)
        with self.lock:
            self.batches.append(events)
            self.sizes.append(len(request.content))
        status, body, headers = self.answer(events)
        return httpx.Response(status, json=body, headers=headers)

    def client(self, **kw: Any) -> Client:
        http = httpx.Client(transport=httpx.MockTransport(self.handler))
        return Client("mb_test_key", "http://meterbridge.test", http_client=http, **kw)

    def ids(self) -> list[str]:
        with self.lock:
            return [e["id"] for b in self.batches for e in b]


def accept(events: list[dict[str, Any]]) -> tuple[int, Any, dict[str, str]]:
    return 202, {"accepted": len(events), "duplicates": 0}, {}


def test_ids_are_uuid7_strictly_increasing_and_carry_the_record_time() -> None:
    # Given the time now, in milliseconds
    before = time.time_ns() // 1_000_000
    # When 10,000 ids are made in a row
    ids = [uuid7() for _ in range(10_000)]
    after = time.time_ns() // 1_000_000
    # Then each is a version-7, RFC 9562 UUID, strictly increasing, stamped with the time
    parsed = [uuid.UUID(i) for i in ids]
    assert {(u.version, u.variant) for u in parsed} == {(7, uuid.RFC_4122)}
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert before <= parsed[0].int >> 80 <= parsed[-1].int >> 80 <= after + 1


def test_record_fixes_id_and_time_and_refuses_what_cannot_be_sent() -> None:
    server = Server(accept)
    rejected: list[RejectedEvent] = []
    client = server.client(flush_interval=60, on_rejected=rejected.append)
    # When events are recorded, one with the caller's own id, and the caller then reuses its dict
    data = {"n": 1}
    mine = client.record("api.call", data, id="my-id-1", subject="cust-1")
    data["n"] = 2
    auto = client.record("api.call")
    assert client.flush(timeout=WAIT_S)
    # Then they are sent as recorded (not as mutated after the call), with a time zone
    sent = {e["id"]: e for e in server.batches[0]}
    assert (
        mine == "my-id-1" and sent[mine]["subject"] == "cust-1" and sent[mine]["data"] == {"n": 1}
    )
    assert sent[auto]["time"].endswith("Z") and "data" not in sent[auto]
    # And arguments of the wrong shape raise at once, and change nothing
    with pytest.raises(ValueError):
        client.record("")
    with pytest.raises(TypeError):
        client.record("api.call", ["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        client.record("api.call", time=datetime(2026, 1, 1))
    assert client.stats().recorded == 2
    # And events the sender cannot encode (too large, not JSON) are refused and reported, with
    # their ids, never sent; the good event recorded between them is delivered
    big = client.record("api.call", {"blob": "x" * 70_000})
    good = client.record("api.call", {"n": 3})
    odd = client.record("api.call", {"not json": object()})
    assert client.flush(timeout=WAIT_S)
    client.close()
    assert [(r.event["id"], r.status, r.code) for r in rejected] == [
        (big, 0, "unencodable"),
        (odd, 0, "unencodable"),
    ]
    assert "65536" in rejected[0].message and "not JSON" in rejected[1].message
    assert server.ids() == [mine, auto, good]
    stats = client.stats()
    assert (stats.recorded, stats.sent, stats.rejected, stats.buffered) == (5, 3, 2, 0)


def test_a_batch_goes_out_at_the_count_at_the_byte_size_and_at_the_interval() -> None:
    # Given a client flushing at 10 events or 65,536 bytes, interval 0.3 s
    server = Server(accept)
    client = server.client(max_batch_events=10, max_batch_bytes=65_536, flush_interval=0.3)
    # When 25 small events are recorded: two count-triggered batches go out without a flush
    for i in range(25):
        client.record("api.call", {"i": i})
    deadline = time.monotonic() + WAIT_S
    while len(server.batches) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [len(b) for b in server.batches[:2]] == [10, 10]
    # And the last 5 go out when the interval passes, with no flush call
    while len(server.batches) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(server.batches[2]) == 5
    # When events of ~20 kB are recorded, batches stay within the byte bound
    for i in range(7):
        client.record("api.call", {"i": i, "pad": "x" * 20_000})
    assert client.flush(timeout=WAIT_S)
    assert all(size <= 65_536 for size in server.sizes)
    assert [len(b) for b in server.batches[3:]] == [3, 3, 1]
    client.close()


def test_drop_policy_drops_and_counts_when_the_buffer_is_full() -> None:
    # Given a buffer of 5 events and a sender that waits for its interval
    server = Server(accept)
    client = server.client(max_buffer_events=5, on_full="drop", flush_interval=60)
    # When 8 are recorded
    started = time.perf_counter()
    for i in range(8):
        client.record("api.call", {"i": i})
    took = time.perf_counter() - started
    # Then 3 are dropped at once (no waiting), counted, and the 5 others delivered on close
    assert client.stats().dropped == 3 and took < 5
    client.close()
    assert len(server.ids()) == 5 and client.stats().sent == 5


def test_block_policy_waits_up_to_its_timeout_then_drops() -> None:
    # Given a server that is down (503) and a buffer of 2 events
    down = Server(lambda ev: (503, {"error": {"code": "unavailable", "message": "down"}}, {}))
    client = down.client(
        max_buffer_events=2, max_batch_events=1, on_full="block", block_timeout=0.5, backoff_max=0.2
    )
    for i in range(3):  # one in flight (retrying), two waiting
        client.record("api.call", {"i": i})
    # When one more is recorded
    started = time.monotonic()
    client.record("api.call", {"i": 3})
    waited = time.monotonic() - started
    # Then record() waited for room for the block timeout, then dropped and counted it
    assert waited >= 0.5 and client.stats().dropped == 1
    # And close() gives up after its timeout: what was left is counted as dropped, not hidden
    client.close(timeout=0.5)
    stats = client.stats()
    assert stats.sent == 0 and stats.dropped == 4 and stats.retried > 0


def test_record_never_raises_when_the_server_is_unreachable() -> None:
    # Given nothing listening at the base URL
    client = Client("mb_test_key", "http://127.0.0.1:9", backoff_max=0.1, flush_interval=0.05)
    # When events are recorded
    ids = [client.record("api.call", {"i": i}) for i in range(10)]
    # Then record() returned ids; the connection errors are retried, then counted on close
    assert len(ids) == 10
    deadline = time.monotonic() + WAIT_S
    while client.stats().retried == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    client.close(timeout=0.3)
    assert client.stats().retried > 0 and client.stats().dropped == 10


def test_429_waits_for_retry_after_and_5xx_is_retried_with_the_same_ids() -> None:
    # Given a server that throttles once (Retry-After: 1), then fails once with 500
    answers = [
        (429, {"error": {"code": "rate_limited", "message": "slow"}}, {"Retry-After": "1"}),
        (500, {"error": {"code": "internal", "message": "oops"}}, {}),
    ]
    server = Server(lambda ev: answers.pop(0) if answers else accept(ev))
    client = server.client(flush_interval=60, backoff_base=0.01)
    ids = [client.record("api.call", {"i": i}) for i in range(3)]
    # When flushed
    started = time.monotonic()
    assert client.flush(timeout=WAIT_S)
    # Then the same batch was sent three times, the first retry no sooner than Retry-After
    assert time.monotonic() - started >= 1.0
    assert [[e["id"] for e in b] for b in server.batches] == [ids, ids, ids]
    stats = client.stats()
    assert (stats.sent, stats.retried, stats.requests) == (3, 6, 3)
    client.close()


def test_full_jitter_backoff_is_bounded_and_random() -> None:
    delays = [backoff(5, 0.1, 2.0, None) for _ in range(500)]
    assert all(0 <= d <= 2.0 for d in delays) and len({round(d, 6) for d in delays}) > 400
    assert min(backoff(0, 0.1, 30.0, 3.0) for _ in range(50)) >= 3.0  # Retry-After wins
    assert backoff(0, 0.1, 2.0, 3600.0) == 2.0  # capped


def _validating(detailed: bool) -> Callable[[list[dict[str, Any]]], tuple[int, Any, dict]]:
    """Refuses any batch holding an event with ``data.bad``, with or without per-index details."""

    def answer(events: list[dict[str, Any]]) -> tuple[int, Any, dict[str, str]]:
        bad = [i for i, e in enumerate(events) if e.get("data", {}).get("bad")]
        if not bad:
            return accept(events)
        details = [{"index": i, "errors": [{"loc": ["data"], "message": "bad"}]} for i in bad]
        error = {"code": "invalid_request", "message": "invalid"}
        return 400, {"error": {**error, "details": details} if detailed else error}, {}

    return answer


@pytest.mark.parametrize("detailed", [True, False], ids=["server-details", "bisection"])
def test_a_refused_batch_is_split_so_only_the_bad_events_are_rejected(detailed: bool) -> None:
    # Given a server refusing whole batches that hold a bad event
    server = Server(_validating(detailed))
    rejected: list[RejectedEvent] = []
    client = server.client(max_batch_events=64, flush_interval=60, on_rejected=rejected.append)
    # When 64 events, two of them bad, are flushed as one batch
    ids = [client.record("api.call", {"i": i, "bad": i in (5, 40)}) for i in range(64)]
    assert client.flush(timeout=WAIT_S)
    client.close()
    # Then exactly the two bad events are reported, never retried, and the 62 others delivered
    assert sorted(r.event["data"]["i"] for r in rejected) == [5, 40]
    assert all(r.status == 400 and r.code == "invalid_request" for r in rejected)
    accepted = [e["id"] for b in server.batches if not any(x["data"]["bad"] for x in b) for e in b]
    assert sorted(accepted) == sorted(i for n, i in enumerate(ids) if n not in (5, 40))
    stats = client.stats()
    assert (stats.sent, stats.rejected) == (62, 2)
    # With details: one more request; by halving: a logarithmic number
    assert stats.requests == 2 if detailed else 2 < stats.requests <= 2 * 2 * 6 + 1


def test_other_4xx_refuses_the_batch_once_without_retrying() -> None:
    server = Server(lambda ev: (401, {"error": {"code": "unauthorized", "message": "bad key"}}, {}))
    rejected: list[RejectedEvent] = []
    client = server.client(flush_interval=60, on_rejected=rejected.append)
    for i in range(3):
        client.record("api.call", {"i": i})
    assert client.flush(timeout=WAIT_S)
    client.close()
    assert len(server.batches) == 1 and [r.status for r in rejected] == [401] * 3
    assert client.stats().rejected == 3 and client.stats().retried == 0


def test_a_failing_on_rejected_callback_does_not_stop_delivery() -> None:
    def boom(_: RejectedEvent) -> None:
        raise RuntimeError("callback bug")

    server = Server(_validating(True))
    client = server.client(max_batch_events=4, flush_interval=60, on_rejected=boom)
    for i in range(8):
        client.record("api.call", {"i": i, "bad": i == 1})
    assert client.flush(timeout=WAIT_S)
    client.close()
    assert (client.stats().sent, client.stats().rejected) == (7, 1)


async def test_async_client_batches_retries_and_drops_on_a_full_buffer() -> None:
    # Given a server that answers 503 once, then accepts
    answers = [(503, {"error": {"code": "unavailable", "message": "down"}}, {"Retry-After": "0"})]
    server = Server(lambda ev: answers.pop(0) if answers else accept(ev))
    http = httpx.AsyncClient(transport=httpx.MockTransport(server.handler))
    client = AsyncClient(
        "mb_test_key",
        "http://meterbridge.test",
        http_client=http,
        max_batch_events=10,
        max_buffer_events=30,
        flush_interval=60,
        backoff_base=0.01,
        on_full="block",
        block_timeout=0.2,
    )
    # When 40 events are recorded without yielding to the loop: record() cannot wait
    ids = [client.record("api.call", {"i": i}) for i in range(40)]
    # Then the 10 past the bound are dropped and counted at once
    assert client.stats().dropped == 10
    # And arecord() waits for room (the sender frees it) instead of dropping
    ids.append(await client.arecord("api.call", {"i": 40}))
    assert client.stats().dropped == 10
    await client.aclose()
    await asyncio.sleep(0)
    # Then every kept event was delivered once, in batches of at most 10, after one retry
    kept = ids[:30] + ids[40:]
    assert sorted(set(server.ids())) == sorted(kept)
    assert all(len(b) <= 10 for b in server.batches)
    stats = client.stats()
    assert (stats.sent, stats.retried, stats.buffered) == (31, 10, 0)
    await http.aclose()


async def test_async_client_flush_waits_and_the_interval_sends_alone() -> None:
    server = Server(accept)
    http = httpx.AsyncClient(transport=httpx.MockTransport(server.handler))
    client = AsyncClient(
        "mb_test_key", "http://meterbridge.test", http_client=http, flush_interval=0.2
    )
    # When one event is recorded and the loop runs on without a flush
    client.record("api.call", {"n": 1})
    deadline = time.monotonic() + WAIT_S
    while not server.batches and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    # Then the interval sent it
    assert len(server.ids()) == 1
    # And flush() returns True once a later event is settled
    client.record("api.call", {"n": 2})
    assert await client.flush(timeout=WAIT_S) and len(server.ids()) == 2
    await client.aclose()
    await http.aclose()


def test_on_rejected_may_record_an_event_of_its_own() -> None:
    # Given a callback that records a "rejected" event through the same client
    server = Server(_validating(True))
    client: Client

    def note(rejected: RejectedEvent) -> None:
        client.record("client.rejected", {"id": rejected.event["id"]})

    client = server.client(max_batch_events=4, flush_interval=0.05, on_rejected=note)
    bad = client.record("api.call", {"bad": True})
    # When the bad event is refused
    assert client.flush(timeout=WAIT_S)
    assert client.flush(timeout=WAIT_S)  # the callback's own event
    client.close()
    # Then the callback's event went out too (no deadlock on the client's lock)
    notes = [e for b in server.batches for e in b if e["type"] == "client.rejected"]
    assert [e["data"]["id"] for e in notes] == [bad]


def test_a_tight_loop_from_four_threads_is_delivered_whole_within_the_bound() -> None:
    # Given a small buffer (2,000 events) and a blocking policy with room to wait
    server = Server(accept)
    client = server.client(max_buffer_events=2000, on_full="block", block_timeout=WAIT_S)
    ids: list[str] = []

    def burst() -> None:
        mine = [client.record("api.call", {"i": i}) for i in range(5000)]
        with server.lock:
            ids.extend(mine)

    # When 4 threads record 5,000 events each back to back, far faster than one per ms
    threads = [threading.Thread(target=burst) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert client.flush(timeout=WAIT_S)
    client.close()
    # Then every event went out exactly once, in batches within the count bound, none dropped
    assert sorted(server.ids()) == sorted(ids) and len(set(ids)) == 20_000
    assert max(len(b) for b in server.batches) <= 500
    stats = client.stats()
    assert (stats.recorded, stats.sent, stats.dropped) == (20_000, 20_000, 0)


_FORK_IDS = """
import os
from meterbridge_client import uuid7
parent = uuid7()
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(write, ",".join(uuid7() for _ in range(3)).encode())
    os._exit(0)
os.waitpid(pid, 0)
print(parent, os.read(read, 4096).decode(), uuid7())
"""


def test_a_forked_child_draws_its_own_id_bits() -> None:
    # Given a single-threaded process that makes an id, forks, and both make more
    out = subprocess.run(
        [sys.executable, "-c", _FORK_IDS], capture_output=True, text=True, timeout=WAIT_S
    )
    assert out.returncode == 0, out.stderr
    parent, children, parent_after = out.stdout.split()
    child = children.split(",")
    # Then the child's 26 per-process random bits differ from the parent's (so their counters,
    # copied at the fork, cannot make the same ids), and its own ids still increase
    assert len(child) == 3 and child == sorted(child) and parent_after > parent
    assert len({c[14:23] for c in child}) == 1 and child[0][14:23] != parent[14:23]
    assert parent_after[14:23] == parent[14:23]


def test_record_ids_from_the_senders_pool_are_unique_and_at_most_a_second_old() -> None:
    from meterbridge_client._ids import POOL_AGE_MS, IdPool, _draw

    server = Server(accept)
    client = server.client(flush_interval=60)
    # Given a client whose sender has minted record()'s ids ahead
    deadline = time.monotonic() + WAIT_S
    while not client._core.ids.ids and time.monotonic() < deadline:
        time.sleep(0.01)
    pooled = set(client._core.ids.ids)
    # When events are recorded, more than the pool holds
    stamps = []
    for i in range(1000):
        before = time.time_ns() // 1_000_000
        event_id = client.record("api.call", {"i": i})
        stamps.append((event_id, before, time.time_ns() // 1_000_000))
    assert client.flush(timeout=WAIT_S)
    client.close()
    # Then they took the pooled ids first, and every id is a unique UUIDv7 stamped no later
    # than its record time and no more than POOL_AGE_MS before it
    ids = [i for i, _, _ in stamps]
    assert pooled and pooled <= set(ids) and len(set(ids)) == len(ids) == 1000
    for event_id, before, after in stamps:
        u = uuid.UUID(event_id)
        assert (u.version, u.variant) == (7, uuid.RFC_4122)
        assert before - POOL_AGE_MS < u.int >> 80 <= after
    assert sorted(server.ids()) == sorted(ids)
    # And a fork (here: its child hook) empties every pool: the parent's ids stay the parent's
    pool = IdPool()
    pool.fill()
    assert pool.ids
    _draw()
    assert not pool.ids
