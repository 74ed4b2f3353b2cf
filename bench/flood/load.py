"""The open-loop load of bench.flood (a module of its own: the flooding process imports it)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import Any

import httpx


def _request(http: httpx.AsyncClient, key: str, n: int, tag: str) -> Any:
    headers = {"Authorization": f"Bearer {key}"}
    if n % 2:
        return http.get("/v1/usage", headers=headers)
    body = {"id": f"{tag}-{n}", "type": "api.call", "data": {"n": n}}
    return http.post("/v1/events", json=body, headers=headers)


async def open_loop(
    url: str, key: str, rate: float, seconds: float, in_flight: int, tag: str
) -> tuple[list[float], Counter[str]]:
    """``rate`` requests/s for ``seconds`` on a fixed schedule; latencies (ms) and outcomes."""
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    slots = asyncio.Semaphore(in_flight)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:

        async def one(n: int) -> None:
            try:
                t0 = time.perf_counter()
                response = await _request(http, key, n, tag)
                latencies.append((time.perf_counter() - t0) * 1000)
                outcomes[str(response.status_code)] += 1
            except httpx.HTTPError as exc:
                outcomes[type(exc).__name__] += 1
            finally:
                slots.release()

        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter()
        total = int(rate * seconds)
        for n in range(total):
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if slots.locked():
                outcomes["not_sent"] += 1  # bounded: never more than in_flight outstanding
                continue
            await slots.acquire()
            tasks.append(asyncio.create_task(one(n)))
        await asyncio.gather(*tasks)
    return latencies, outcomes


def flood_worker(url: str, key: str, rate: float, seconds: float, in_flight: int, out: Any) -> None:
    _, outcomes = asyncio.run(open_loop(url, key, rate, seconds, in_flight, uuid.uuid4().hex))
    out.put(dict(outcomes))
