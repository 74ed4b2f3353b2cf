"""Body caps and read deadlines on the uvicorn servers (issue 18: item 5, slowloris).

Real uvicorn on loopback, driven over raw sockets so the client controls the framing (chunked
bodies, headers sent a byte at a time). Tables on the moto server.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from meterbridge.logic.ingest import parse
from meterbridge_dev.stack.devapp import create_dev_app
from meterbridge_dev.stack.servers import BackgroundServer
from meterbridge_streaming.limits import DEFAULT_BODY_BYTES, INGEST_BODY_BYTES, BodyLimit
from meterbridge_streaming.serving import GuardedH11Protocol
from tests.support.builders import event_records, make_tenant

ROOT = Path(__file__).resolve().parents[2]
UPLOAD_BYTES = 64 * 1024 * 1024  # what the attacker would send: 64 MB
CHUNK = 64 * 1024


@pytest.fixture
def dev_url(aws: dict[str, str]) -> Iterator[str]:
    with BackgroundServer(create_dev_app(), graceful_timeout=2.0) as server:
        yield server.url


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    return sock


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        if not more:
            raise AssertionError(f"closed before a response: {data!r}")
        data += more
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        more = sock.recv(65536)
        if not more:
            break
        rest += more
    return int(lines[0].split()[1]), headers, rest[:length]


def _chunked_upload(
    url: str, path: str, headers: dict[str, str], total: int
) -> tuple[int, dict[str, Any], int, float, int]:
    """POST a chunked body of ``total`` bytes while reading the answer.

    Returns (status, body, bytes the client managed to send, seconds to the answer, peak RSS
    growth of this process, which hosts the server, while it ran).
    """
    sock = _connect(url)
    head = f"POST {path} HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    sock.sendall(head.encode())
    sent = 0
    answered = threading.Event()
    peak = [0]
    baseline = _rss_bytes()

    def upload() -> None:
        nonlocal sent
        frame = f"{CHUNK:x}\r\n".encode() + b"7" * CHUNK + b"\r\n"
        try:
            while sent < total and not answered.is_set():
                sock.sendall(frame)
                sent += CHUNK
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server closed the connection: the upload was cut off

    def sample() -> None:
        while not answered.is_set():
            peak[0] = max(peak[0], _rss_bytes() - baseline)
            time.sleep(0.01)

    started = time.monotonic()
    threads = [threading.Thread(target=upload), threading.Thread(target=sample)]
    for thread in threads:
        thread.start()
    try:
        status, _, body = _read_response(sock)
    finally:
        elapsed = time.monotonic() - started
        answered.set()
        for thread in threads:
            thread.join(30)
        sock.close()
    return status, json.loads(body), sent, elapsed, peak[0]


def test_a_chunked_ingest_body_over_1_mb_is_refused_without_reading_it(
    dev_url: str, aws: dict[str, str]
) -> None:
    # Given a tenant's valid key, and a 64 MB chunked upload to the ingest route
    _, key = make_tenant("basic")
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    # When it is sent over a socket to the local stack
    status, body, sent, elapsed, rss = _chunked_upload(dev_url, "/v1/events", headers, UPLOAD_BYTES)
    print(f"413 after {elapsed:.2f} s; client sent {sent / 1e6:.1f} MB; RSS +{rss / 1e6:.1f} MB")
    # Then 413 with the usual error body, long before the upload could finish
    assert status == 413, body
    assert body["error"]["code"] == "payload_too_large"
    assert body["error"]["details"] == {"limit_bytes": INGEST_BODY_BYTES}
    assert sent < UPLOAD_BYTES / 2, f"the server read {sent} bytes"
    assert elapsed < 30
    # And the server's memory did not grow by anything like the body's size
    assert rss < UPLOAD_BYTES / 4, f"RSS grew by {rss / 1e6:.0f} MB"
    assert event_records(aws["EventsTable"]) == []


@pytest.mark.parametrize(
    ("path", "limit"),
    [("/stripe/webhook", 1_000_000), ("/admin/tenants", DEFAULT_BODY_BYTES)],
)
def test_the_webhook_and_admin_routes_are_capped_too(dev_url: str, path: str, limit: int) -> None:
    status, body, sent, _, _ = _chunked_upload(dev_url, path, {}, 16 * 1024 * 1024)
    assert (status, body["error"]["details"]) == (413, {"limit_bytes": limit})
    assert sent < 8 * 1024 * 1024


def test_a_declared_length_over_the_cap_is_refused_before_any_byte(dev_url: str) -> None:
    # Given headers announcing a 10 MB body, and no body sent at all
    sock = _connect(dev_url)
    sock.sendall(
        b"POST /admin/tenants HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: 10000000\r\n\r\n"
    )
    # Then the answer comes at once, and the server closes the connection
    status, headers, body = _read_response(sock)
    assert status == 413 and headers["connection"] == "close"
    assert json.loads(body)["error"]["code"] == "payload_too_large"
    assert sock.recv(1) == b""
    sock.close()


def test_a_small_chunked_body_still_reaches_the_route(dev_url: str, aws: dict[str, str]) -> None:
    # Given a valid two-event batch sent chunked
    _, key = make_tenant("basic")
    payload = json.dumps([{"id": "c-1", "type": "api.call"}, {"id": "c-2", "type": "api.call"}])

    def chunks() -> Iterator[bytes]:
        yield payload[:10].encode()
        yield payload[10:].encode()

    resp = httpx.post(
        f"{dev_url}/v1/events",
        content=chunks(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert resp.status_code == 202 and resp.json() == {"accepted": 2, "duplicates": 0}


def test_the_ingest_cap_is_the_ingest_limit() -> None:
    assert INGEST_BODY_BYTES == parse.MAX_BODY_BYTES


# -- slowloris --------------------------------------------------------------------------------


async def _slow_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers after 3 s: a long response must not be cut by the read deadlines."""
    if scope["type"] != "http":
        return
    import asyncio

    while (await receive()).get("more_body"):
        pass
    await asyncio.sleep(3 if scope["path"] == "/slow" else 0)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"done"})


@pytest.fixture
def short_deadlines(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(GuardedH11Protocol, "header_timeout_s", 1.0)
    monkeypatch.setattr(GuardedH11Protocol, "body_timeout_s", 1.5)
    with BackgroundServer(_slow_app) as server:
        yield server.url


def _closed_within(sock: socket.socket, seconds: float, dribble: bytes | None) -> float | None:
    """Dribble a byte every 0.2 s until the server closes; seconds it took, None if never."""
    started = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - started < seconds:
        try:
            if sock.recv(1024) == b"":
                return time.monotonic() - started
        except TimeoutError:
            pass
        except ConnectionResetError:
            return time.monotonic() - started
        if dribble is not None:
            try:
                sock.sendall(dribble)
            except OSError:
                return time.monotonic() - started
    return None


def test_a_client_dribbling_its_headers_is_disconnected(short_deadlines: str) -> None:
    # Given a request line, then one header byte every 0.2 s (each resetting no timer)
    sock = _connect(short_deadlines)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
    # Then the server closes the connection after the header deadline (1 s here)
    took = _closed_within(sock, 20.0, b"a")
    sock.close()
    assert took is not None, "the server kept a dribbling connection open"
    assert took >= 0.9


def test_a_silent_connection_is_disconnected(short_deadlines: str) -> None:
    sock = _connect(short_deadlines)
    took = _closed_within(sock, 20.0, None)
    sock.close()
    assert took is not None and took >= 0.9


def test_a_client_dribbling_its_body_is_disconnected(short_deadlines: str) -> None:
    sock = _connect(short_deadlines)
    sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10000\r\n\r\n")
    took = _closed_within(sock, 20.0, b"x")
    sock.close()
    assert took is not None and took >= 1.4


def test_a_long_response_and_keep_alive_are_not_cut(short_deadlines: str) -> None:
    # Given a request read at once whose answer takes 3 s (longer than both deadlines)
    with httpx.Client(base_url=short_deadlines, timeout=30) as client:
        slow = client.get("/slow")
        # Then it is answered, and the kept-alive connection serves the next request
        fast = client.get("/")
    assert (slow.status_code, slow.text, fast.text) == (200, "done", "done")
    assert slow.extensions["network_stream"] is fast.extensions["network_stream"]


def test_the_streaming_service_runs_uvicorn_with_the_guards(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the ECS entry point, with uvicorn.run captured
    spec = importlib.util.spec_from_file_location(
        "streaming_entry", ROOT / "services" / "streaming" / "app.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    seen: dict[str, Any] = {}
    monkeypatch.setattr(module.uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    monkeypatch.setattr(module.signal, "signal", lambda *a: None)
    # When it starts
    module.main()
    # Then the protocol has the read deadlines, headers are capped and bodies are capped
    assert seen["http"] is GuardedH11Protocol
    assert seen["h11_max_incomplete_event_size"] == 16 * 1024
    assert seen["timeout_keep_alive"] == 5
    assert isinstance(seen["app"], BodyLimit)
