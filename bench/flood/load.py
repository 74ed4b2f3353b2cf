"""The open-loop load of bench.flood (a module of its own: the flooding process imports it).

A raw HTTP/1.1 client on asyncio streams rather than httpx: requests are prebuilt bytes and
a response is a status line, headers and a ``Content-Length`` body, so a request costs the
client some tens of microseconds. The flood must load the server, not the client's own
interpreter on the same two cores (the bench reports each process's CPU to show it).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process so far (this one by default; Linux /proc)."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RawClient:
    """Keep-alive connections to one server, one request at a time on each."""

    def __init__(self, url: str, key: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.idle: list[Conn] = []
        self.auth = f"Authorization: Bearer {key}\r\n".encode()
        self.head = f"Host: {self.host}:{self.port}\r\n".encode()

    def request(self, n: int, tag: str) -> bytes:
        """Odd n: ``GET /v1/usage``; even n: ``POST /v1/events`` with one event."""
        if n % 2:
            return b"GET /v1/usage HTTP/1.1\r\n" + self.head + self.auth + b"\r\n"
        body = b'{"id":"%s-%d","type":"api.call","data":{"n":%d}}' % (tag.encode(), n, n)
        return (
            b"POST /v1/events HTTP/1.1\r\n"
            + self.head
            + self.auth
            + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body
        )

    async def send(self, raw: bytes) -> int:
        """The response's status (its body read and dropped)."""
        conn = self.idle.pop() if self.idle else await asyncio.open_connection(self.host, self.port)
        reader, writer = conn
        try:
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            lower = head.lower()
            at = lower.find(b"content-length:")
            length = int(lower[at + 15 : lower.index(b"\r\n", at)]) if at >= 0 else 0
            if length:
                await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        if b"connection: close" in lower:
            writer.close()
        else:
            self.idle.append(conn)
        return int(head[9:12])

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


async def open_loop(
    url: str, key: str, rate: float, seconds: float, in_flight: int, tag: str
) -> tuple[list[float], Counter[str]]:
    """``rate`` requests/s for ``seconds`` on a fixed schedule; latencies (ms) and outcomes."""
    client = RawClient(url, key)
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    outstanding = 0

    async def one(raw: bytes) -> None:
        nonlocal outstanding
        try:
            t0 = time.perf_counter()
            status = await client.send(raw)
            latencies.append((time.perf_counter() - t0) * 1000)
            outcomes[str(status)] += 1
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            outcomes[type(exc).__name__] += 1
        finally:
            outstanding -= 1

    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter()
    for n in range(int(rate * seconds)):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if outstanding >= in_flight:
            outcomes["not_sent"] += 1  # bounded: never more than in_flight outstanding
            continue
        outstanding += 1
        task = asyncio.create_task(one(client.request(n, tag)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    client.close()
    return latencies, outcomes


def flood_worker(url: str, key: str, rate: float, seconds: float, in_flight: int, out: Any) -> None:
    _, outcomes = asyncio.run(open_loop(url, key, rate, seconds, in_flight, uuid.uuid4().hex))
    out.put({"outcomes": dict(outcomes), "cpu_s": cpu_seconds()})
