"""meterbridge-client against the real local stack over HTTP (usage API under uvicorn, moto
server, the OpenMeter stand-in fed by the real flush)."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from meterbridge_client import AsyncClient, Client, MeteringMiddleware, RejectedEvent

from meterbridge_dev.stack.servers import BackgroundServer
from tests.client.conftest import Stack

ROOT = Path(__file__).resolve().parents[2]
RECORDER = [sys.executable, "-m", "tests.client._recorder"]
# Bounds for waiting on conditions on a loaded machine (not assertions on speed).
WAIT_S = 240.0


def _wait(predicate, what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _assert_each_once(stack: Stack, ids: list[str], meter: str = "api_calls") -> None:
    """Counted once, stored once, and delivered to OpenMeter once after a flush."""
    assert len(set(ids)) == len(ids)
    assert stack.usage(meter) == len(ids)
    stored = stack.stored_ids()
    assert len(stored) == len(ids) and set(stored) == set(ids)
    stack.flush_all()
    delivered = stack.openmeter_ids()
    assert set(delivered) == set(ids)
    assert max(delivered.values()) == 1


@pytest.mark.slow
def test_20000_events_from_8_threads_arrive_exactly_once(stack: Stack) -> None:
    # Given a client on the stack
    client = Client(stack.key, stack.url, max_batch_events=500, flush_interval=0.2)
    ids: list[list[str]] = [[] for _ in range(8)]

    def work(n: int) -> None:
        ids[n] = [client.record("api.call", {"thread": n, "i": i}) for i in range(2500)]

    # When 8 threads record 2,500 events each, and the client is flushed and closed
    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert client.flush(timeout=WAIT_S)
    client.close()

    # Then every event arrived exactly once: in /v1/usage, the events table and OpenMeter
    every = [i for chunk in ids for i in chunk]
    _assert_each_once(stack, every)
    stats = client.stats()
    # (a retried batch the server had stored comes back as duplicates: still counted once)
    assert (stats.recorded, stats.sent + stats.duplicates) == (20_000, 20_000)
    assert (stats.dropped, stats.rejected, stats.buffered) == (0, 0, 0)
    # And in batches, not one request per event
    assert stack.gate.passed == stats.requests <= 20_000 // 500 * 2


@pytest.mark.slow
def test_503_for_ten_seconds_then_recovery_loses_and_duplicates_nothing(stack: Stack) -> None:
    # Given the stack answers 503 to every ingest request for the next 10 s
    client = Client(stack.key, stack.url, max_batch_events=200, flush_interval=0.1, backoff_max=2.0)
    stack.gate.unavailable_for(10.0)
    started = time.monotonic()
    ids: list[str] = []

    # When events are recorded through the outage and after it
    while time.monotonic() - started < 12.0:
        ids += [client.record("api.call", {"i": len(ids) + k}) for k in range(50)]
        time.sleep(0.1)
    assert client.flush(timeout=WAIT_S)
    client.close()

    # Then the outage was felt (requests refused, batches retried)...
    stats = client.stats()
    assert stack.gate.refused > 0 and stats.retried > 0
    # ...and nothing was lost or counted twice
    _assert_each_once(stack, ids)
    assert (stats.sent + stats.duplicates, stats.dropped, stats.rejected) == (len(ids), 0, 0)


def test_one_bad_event_is_reported_and_the_rest_delivered(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a client that collects refused events
    rejected: list[RejectedEvent] = []
    client = Client(
        stack.key, stack.url, max_batch_events=100, flush_interval=60, on_rejected=rejected.append
    )
    too_old = datetime.now(UTC) - timedelta(days=40)

    # When one batch holds 99 good events and one the server refuses (older than 35 days)
    ids = [client.record("api.call", {"i": i}) for i in range(50)]
    bad = client.record("api.call", {"i": "bad"}, time=too_old)
    ids += [client.record("api.call", {"i": i}) for i in range(50, 99)]
    with caplog.at_level(logging.WARNING, logger="meterbridge_client"):
        assert client.flush(timeout=WAIT_S)
    client.close()

    # Then that one event is reported (callback and log line), once, with the server's reason
    assert [r.event["id"] for r in rejected] == [bad]
    assert rejected[0].status == 400 and rejected[0].code == "invalid_request"
    assert rejected[0].errors, "the server's per-field errors are passed on"
    assert any(bad in r.getMessage() and "rejected" in r.getMessage() for r in caplog.records)
    # And the 99 others are delivered, each once
    _assert_each_once(stack, ids)
    stats = client.stats()
    assert (stats.sent + stats.duplicates, stats.rejected, stats.dropped) == (99, 1, 0)


@pytest.mark.slow
def test_durable_buffer_replays_after_sigkill_and_the_server_counts_each_once(
    stack: Stack, tmp_path: Path
) -> None:
    # Given a recording process whose first 3 requests get through, then 503s
    stack.gate.reject_after = 3
    db, ids_file = tmp_path / "events.db", tmp_path / "ids.txt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "shared"), str(ROOT)])}
    proc = subprocess.Popen(
        [*RECORDER, stack.url, stack.key, str(db), str(ids_file), "2000"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "recorded"
        _wait(lambda: stack.gate.refused >= 2, "the recorder to be retrying")
    finally:
        # When it is killed with SIGKILL while it still holds undelivered events
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    ids = ids_file.read_text().split()
    assert len(ids) == 2000
    delivered_before = stack.usage()
    assert 0 < delivered_before < 2000

    # And a new client starts on the same file, with the stack healthy again
    stack.gate.reject_after = None
    client = Client(stack.key, stack.url, durable_path=str(db), flush_interval=0.1)
    replayed = client.stats().replayed
    assert client.flush(timeout=WAIT_S)
    client.close()

    # Then the rest was replayed, and the server counts each of the 2,000 events once
    assert 2000 - delivered_before <= replayed <= 2000
    _assert_each_once(stack, ids)
    assert client.stats().sent + client.stats().duplicates == replayed
    # And the file is empty: a third start replays nothing
    again = Client(stack.key, stack.url, durable_path=str(db), close_at_exit=False)
    assert again.stats().replayed == 0
    again.close()


def test_events_left_in_the_buffer_are_delivered_at_interpreter_exit(stack: Stack) -> None:
    # Given a process that records 300 events and exits without flush() or close()
    script = (
        "import logging, sys\n"
        "from meterbridge_client import Client\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "client = Client(sys.argv[1], sys.argv[2], flush_interval=3600)\n"
        "ids = [client.record('api.call', {'i': i}) for i in range(300)]\n"
        "print('\\n'.join(ids))\n"
    )
    # When it exits normally
    done = subprocess.run(
        [sys.executable, "-c", script, stack.key, stack.url],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=True,
    )
    # Then atexit drained the buffer: each event arrived once, and the counters were logged
    _assert_each_once(stack, done.stdout.split())
    closed = re.search(
        r"meterbridge client closed: recorded=(\d+) sent=(\d+) duplicates=(\d+)", done.stderr
    )
    assert closed, done.stderr
    recorded, sent, duplicates = map(int, closed.groups())
    assert recorded == sent + duplicates == 300


def _metered_app(client: Client | AsyncClient) -> FastAPI:
    app = FastAPI()
    app.add_middleware(MeteringMiddleware, client=client)

    @app.get("/items/{item_id}")
    async def item(item_id: str, request: Request) -> dict[str, str]:
        request.state.meter.add(tokens=10)
        return {"item": item_id}

    @app.post("/chat/{model}")
    async def chat(model: str, request: Request) -> dict[str, str]:
        request.state.meter.add(tokens=1000, model=model)
        request.state.meter.add(tokens=234)
        return {"model": model}

    return app


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_middleware_records_one_event_per_request_with_route_template_and_values(
    stack: Stack, kind: str
) -> None:
    # Given a FastAPI app metered by the middleware, served over HTTP
    cls = Client if kind == "sync" else AsyncClient
    client = cls(stack.key, stack.url, flush_interval=0.1)
    server = BackgroundServer(_metered_app(client), graceful_timeout=2.0)
    base = server.start()
    try:
        # When it serves 3 item reads, 2 chats and one unknown path
        with httpx.Client(base_url=base, timeout=30) as http:
            for n in ("secret-1", "secret-2", "secret-3"):
                assert http.get(f"/items/{n}").status_code == 200
            for _ in range(2):
                assert http.post("/chat/gpt-x").status_code == 200
            assert http.get("/nope/secret-4").status_code == 404
    finally:
        # And stops (the lifespan's shutdown drains the client)
        server.stop()

    # Then one event per request was delivered, before the server finished stopping
    stats = client.stats()
    assert stats.buffered == 0 and stats.sent + stats.duplicates == 6
    datas = [json.loads(r["event"])["data"] for r in stack.event_records()]
    assert stack.usage() == 6
    by_route: dict[str | None, list[dict[str, object]]] = {}
    for data in datas:
        by_route.setdefault(data["route"], []).append(data)  # type: ignore[arg-type]
    assert set(by_route) == {"/chat/{model}", "/items/{item_id}", None}
    assert [(d["method"], d["status"], d["tokens"]) for d in by_route["/items/{item_id}"]] == [
        ("GET", 200, 10)
    ] * 3
    assert [
        (d["method"], d["status"], d["tokens"], d["model"]) for d in by_route["/chat/{model}"]
    ] == [("POST", 200, 1234, "gpt-x")] * 2
    assert [(d["method"], d["status"]) for d in by_route[None]] == [("GET", 404)]
    assert all(isinstance(d["duration_ms"], float) and d["duration_ms"] >= 0 for d in datas)
    # And no raw path reached billing
    assert "secret" not in json.dumps(datas)


def test_async_client_delivers_each_event_once(stack: Stack) -> None:
    import asyncio

    # Given an async client
    async def run() -> tuple[list[str], AsyncClient]:
        async with AsyncClient(stack.key, stack.url, max_batch_events=250) as client:
            # When 1,000 events are recorded from the loop
            ids = [client.record("query", {"i": i}) for i in range(1000)]
            assert await client.flush(timeout=WAIT_S)
        return ids, client

    ids, client = asyncio.run(run())
    # Then each arrives once, in 4 batches (and one more request per retry, if any)
    _assert_each_once(stack, ids, meter="queries")
    stats = client.stats()
    assert stats.requests == 4 + stats.retried // 250
    assert stats.sent + stats.duplicates == 1000
