"""Per-tenant request rate limits on every tenant route, and fair shares of a process.

Three layers, cheapest first:

1. ``take_local``: an in-process token bucket per tenant, on every tenant route (ingest, the
   usage read, stream tokens, stream connects). It refills at the plan's
   ``requests_per_minute``/60 per second and holds ``BURST_S`` seconds of it (at least
   ``MIN_BURST`` requests). A tenant far above its plan is refused here, on the event loop,
   with no I/O and no thread hop.
2. ``take_shared``: the plan's ``requests_per_minute`` across every process, a conditional ADD
   on this minute's counter in DynamoDB (sharded for the large plans); ingest and the usage
   read have a budget each (``scope``), so a backend at its ingest limit leaves its dashboard
   readable. Once a window is refused, the process remembers it until the minute ends: the
   rest of that minute's requests cost no write. The streaming task uses layer 1 only (its
   connects and tokens are few, and its role needs no write to the usage table).
3. ``gate``: at most ``max_in_flight(plan)`` blocking calls of a tenant at once in a process
   (``api/blocking.py``); the rest wait their turn without holding a thread, so what a tenant
   is admitted to do is interleaved with other tenants' work instead of queued before it.
   On Lambda (one request per instance) it never waits.

A refusal is ``429 rate_limited`` with ``Retry-After``. A token bucket rather than a library:
one float pair per tenant, nothing to import at a cold start.
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

from meterbridge.dal import usage as usage_dal
from meterbridge.errors import RateLimited
from meterbridge.observability import metrics
from meterbridge.plans import Plan
from meterbridge.settings import Settings

BURST_S = 10.0
MIN_BURST = 20.0
# A tenant's blocking calls at once in a process: its plan rate times this (at least 2).
IN_FLIGHT_S = 0.1
MIN_IN_FLIGHT = 2

_lock = threading.Lock()
# tenant -> (tokens, monotonic time of that count)
_buckets: dict[str, tuple[float, float]] = {}
# (tenant, scope) -> the minute (YYYYmmddHHMM) whose shared window is known to be full
_full: dict[tuple[str, str], str] = {}
# event loop -> tenant -> the tenant's gate on that loop (a semaphore belongs to one loop)
_gates: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[str, tuple[int, asyncio.Semaphore]]
] = weakref.WeakKeyDictionary()


def _limited(message: str, retry_s: float) -> RateLimited:
    metrics.add_metric(name="RateLimited", unit="Count", value=1)
    return RateLimited(message, headers={"Retry-After": str(max(1, math.ceil(retry_s)))})


def take_local(tenant_id: str, plan: Plan, now: float | None = None) -> None:
    """One token of the tenant's in-process bucket, or ``RateLimited``."""
    rate = plan.requests_per_minute / 60.0
    capacity = max(MIN_BURST, rate * BURST_S)
    now = time.monotonic() if now is None else now
    with _lock:
        tokens, at = _buckets.get(tenant_id, (capacity, now))
        tokens = min(capacity, tokens + (now - at) * rate)
        if tokens < 1.0:
            _buckets[tenant_id] = (tokens, now)
            wait = (1.0 - tokens) / rate
        else:
            _buckets[tenant_id] = (tokens - 1.0, now)
            return
    raise _limited(f"more than {plan.requests_per_minute} requests per minute", wait)


def take_shared(
    tenant_id: str, plan: Plan, settings: Settings, now: datetime, scope: str = ""
) -> None:
    """One request in this minute's DynamoDB window of ``scope`` (every process), or
    ``RateLimited``. ``""`` is ingest's budget, ``"read"`` the usage read's."""
    minute = now.strftime("%Y%m%d%H%M")
    retry = 60 - now.second
    message = f"more than {plan.requests_per_minute} requests per minute"
    if _full.get((tenant_id, scope)) == minute:
        raise _limited(message, retry)
    shards = 1 if plan.requests_per_minute <= 1000 else usage_dal.RATE_SHARDS
    cap = -(-plan.requests_per_minute // shards)
    expires = int(now.timestamp()) + 3600
    first = random.randrange(shards)
    window = f"{tenant_id}#{scope}" if scope else tenant_id
    for step in range(min(shards, 2)):
        if usage_dal.take_rate_slot(
            settings.usage_table, window, minute, (first + step) % shards, cap, expires
        ):
            return
    _full[(tenant_id, scope)] = minute
    raise _limited(message, retry)


def max_in_flight(plan: Plan) -> int:
    """How many blocking calls of a tenant on this plan run at once in a process."""
    return max(MIN_IN_FLIGHT, math.ceil(plan.requests_per_minute / 60.0 * IN_FLIGHT_S))


@asynccontextmanager
async def gate(tenant_id: str, limit: int) -> AsyncIterator[None]:
    """Hold one of the tenant's ``limit`` places on this loop while the block runs."""
    loop = asyncio.get_running_loop()
    gates = _gates.get(loop)
    if gates is None:
        gates = _gates[loop] = {}
    held = gates.get(tenant_id)
    if held is None or held[0] != limit:
        # New, or the plan changed: a fresh gate (calls inside the old one finish there).
        held = gates[tenant_id] = (limit, asyncio.Semaphore(limit))
    semaphore = held[1]
    async with semaphore:
        yield


def reset() -> None:
    """Forget every bucket, full window and gate (tests; a plan change takes effect by itself)."""
    with _lock:
        _buckets.clear()
        _full.clear()
        _gates.clear()
