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
   rest of that minute's requests cost no write. A process reserves its slots in chunks
   (``chunk_size``: 1% of a window shard, at least 1) with one conditional ``ADD k`` and hands
   them out itself, so a steady or flooding tenant costs one write per k requests, not one
   per request. The limit is never exceeded (a chunk is taken only if it fits; the window's
   last slots go one at a time); a reserved slot a process does not use by the minute's end
   is lost, so a tenant served by N processes in a minute may be refused up to N x (k - 1)
   requests early (under 1% of its limit per process; docs/performance/flood.md). The
   streaming task uses layer 1 only (its connects and tokens are few, and its role needs no
   write to the usage table).
3. ``gate``: at most ``max_in_flight(plan)`` blocking calls of a tenant at once in a process
   (``api/blocking.py``), and fair between tenants: a tenant spending its burst (its bucket
   below 90% full, ``take_local`` says so) runs, while any other tenant's calls run or
   wait, one blocking call at a time and at most at its plan's rate (``pace_s``): its burst
   is admitted, and served from spare capacity, not in front of everyone else's work. Alone
   it runs up to its limit. Waiting costs no thread. On Lambda (one request per instance) it
   never waits.

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
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
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
# (tenant, scope) -> (minute, slots of that minute's window this process reserved, unused)
_held: dict[tuple[str, str], tuple[str, int]] = {}
# (tenant, scope, shard) -> the minute whose window shard refused a chunk: its last slots go
# one at a time
_tight: dict[tuple[str, str, int], str] = {}
# A chunk of the shared window reserved at once: this share of a shard's cap (at least 1).
CHUNK_SHARE = 0.01
# A bucket below this share of its capacity is spending its burst (``take_local``'s answer):
# a tenant that has gone a second's worth of its rate beyond its plan (a tenth of a bucket of
# 10 s) is above its plan, and is served from spare capacity from then on. (At half, a Basic
# tenant's first 84 requests of a flood ran beside everyone else's at its full gate.)
BURSTING_BELOW = 0.9


def _limited(message: str, retry_s: float) -> RateLimited:
    metrics.add_metric(name="RateLimited", unit="Count", value=1)
    return RateLimited(message, headers={"Retry-After": str(max(1, math.ceil(retry_s)))})


def take_local(tenant_id: str, plan: Plan, now: float | None = None) -> bool:
    """One token of the tenant's in-process bucket, or ``RateLimited``.

    True when the tenant is spending its burst (fewer than ``BURSTING_BELOW`` of the bucket
    left): ``gate`` lets such a tenant's calls run only in the gaps of other tenants' work."""
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
            return tokens - 1.0 < capacity * BURSTING_BELOW
    raise _limited(f"more than {plan.requests_per_minute} requests per minute", wait)


def take_shared(
    tenant_id: str, plan: Plan, settings: Settings, now: datetime, scope: str = ""
) -> None:
    """One request in this minute's DynamoDB window of ``scope`` (every process), or
    ``RateLimited``. ``""`` is ingest's budget, ``"read"`` the usage read's."""
    minute = now.strftime("%Y%m%d%H%M")
    retry = 60 - now.second
    message = f"more than {plan.requests_per_minute} requests per minute"
    key = (tenant_id, scope)
    with _lock:
        if _full.get(key) == minute:
            raise _limited(message, retry)
        held = _held.get(key)
        if held is not None and held[0] == minute and held[1] > 0:
            _held[key] = (minute, held[1] - 1)  # a slot this process reserved: no write
            return
    shards = 1 if plan.requests_per_minute <= 1000 else usage_dal.RATE_SHARDS
    cap = -(-plan.requests_per_minute // shards)
    chunk = chunk_size(cap)
    expires = int(now.timestamp()) + 3600
    first = random.randrange(shards)
    window = f"{tenant_id}#{scope}" if scope else tenant_id
    for step in range(min(shards, 2)):
        shard = (first + step) % shards
        tight = chunk == 1 or _tight.get((tenant_id, scope, shard)) == minute
        for n in (1,) if tight else (chunk, 1):
            if usage_dal.take_rate_slot(
                settings.usage_table, window, minute, shard, cap, expires, n
            ):
                _keep(key, minute, n - 1)
                return
            if n > 1:
                with _lock:
                    _tight[(tenant_id, scope, shard)] = minute
    with _lock:
        _full[key] = minute
    raise _limited(message, retry)


def chunk_size(cap: int) -> int:
    """How many slots of a window shard of ``cap`` a process reserves with one write."""
    return max(1, min(cap, int(cap * CHUNK_SHARE)))


def _keep(key: tuple[str, str], minute: str, spare: int) -> None:
    """Hold ``spare`` reserved slots of ``minute`` for this process's next requests (the
    slots of an earlier minute are dropped: that window is gone)."""
    if spare <= 0:
        return
    with _lock:
        held = _held.get(key)
        if held is not None and held[0] > minute:
            return  # a later minute's slots are held already (this call was slow)
        before = held[1] if held is not None and held[0] == minute else 0
        _held[key] = (minute, before + spare)


def pace_s(plan: Plan) -> float:
    """The interval of the plan's rate: how far apart a bursting tenant's calls start while
    other tenants work (``gate``)."""
    return 60.0 / plan.requests_per_minute if plan.requests_per_minute > 0 else 1.0


def max_in_flight(plan: Plan) -> int:
    """How many blocking calls of a tenant on this plan run at once in a process."""
    return max(MIN_IN_FLIGHT, math.ceil(plan.requests_per_minute / 60.0 * IN_FLIGHT_S))


@dataclass
class _Waiter:
    tenant_id: str
    limit: int
    bursting: bool
    pace_s: float
    ready: asyncio.Future[None]


@dataclass
class _Fair:
    """One event loop's blocking calls: who runs, who waits (in arrival order)."""

    loop: asyncio.AbstractEventLoop
    running: dict[str, int] = field(default_factory=dict)
    steady: int = 0  # running calls of tenants not spending their burst
    bursting: int = 0  # running calls of tenants spending it
    waiting: deque[_Waiter] = field(default_factory=deque)
    queued: dict[str, int] = field(default_factory=dict)  # waiters per tenant
    steady_waiting: int = 0
    # tenant -> monotonic time before which its next bursting call waits while others work
    next_start: dict[str, float] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None

    def may_start(self, tenant_id: str, limit: int, bursting: bool) -> bool:
        if self.running.get(tenant_id, 0) >= limit:
            return False
        if not bursting:
            return True
        # Alone, a bursting tenant uses the process up to its limit. While anyone else's work
        # runs or waits, it runs one call at a time, and at most at its plan's rate: its burst
        # is served from spare capacity only.
        if self.steady == 0 and self.steady_waiting == 0:
            return True
        return self.bursting == 0 and self.loop.time() >= self.next_start.get(tenant_id, 0.0)

    def start(self, tenant_id: str, bursting: bool, pace_s: float) -> None:
        self.running[tenant_id] = self.running.get(tenant_id, 0) + 1
        if bursting:
            self.bursting += 1
            self.next_start[tenant_id] = self.loop.time() + pace_s
        else:
            self.steady += 1
            self.next_start.pop(tenant_id, None)

    def finish(self, tenant_id: str, bursting: bool) -> None:
        left = self.running[tenant_id] - 1
        if left:
            self.running[tenant_id] = left
        else:
            del self.running[tenant_id]
        if bursting:
            self.bursting -= 1
        else:
            self.steady -= 1
        self.wake()

    def wait(self, waiter: _Waiter) -> None:
        self.waiting.append(waiter)
        self.queued[waiter.tenant_id] = self.queued.get(waiter.tenant_id, 0) + 1
        if not waiter.bursting:
            self.steady_waiting += 1

    def _leave(self, waiter: _Waiter) -> None:
        self.waiting.remove(waiter)
        left = self.queued[waiter.tenant_id] - 1
        if left:
            self.queued[waiter.tenant_id] = left
        else:
            del self.queued[waiter.tenant_id]
        if not waiter.bursting:
            self.steady_waiting -= 1

    def wake(self) -> None:
        """Start every waiter that may start now, oldest first (one pass); a tenant's own
        waiters start in their order."""
        blocked: set[str] = set()
        paced: list[float] = []
        for waiter in list(self.waiting):
            if waiter.ready.done():  # cancelled while waiting
                self._leave(waiter)
            elif waiter.tenant_id in blocked:
                continue
            elif self.may_start(waiter.tenant_id, waiter.limit, waiter.bursting):
                self._leave(waiter)
                self.start(waiter.tenant_id, waiter.bursting, waiter.pace_s)
                waiter.ready.set_result(None)
            else:
                blocked.add(waiter.tenant_id)
                if waiter.bursting and waiter.tenant_id in self.next_start:
                    paced.append(self.next_start[waiter.tenant_id])
        # A paced waiter's time comes whether or not another call ends before it.
        due = [t for t in paced if t > self.loop.time()]
        if due and self.timer is None:
            self.timer = self.loop.call_at(min(due), self._tick)

    def _tick(self) -> None:
        self.timer = None
        self.wake()


# event loop -> its blocking calls (a future belongs to one loop)
_fair: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Fair] = weakref.WeakKeyDictionary()


@asynccontextmanager
async def gate(
    tenant_id: str, limit: int, bursting: bool = False, pace_s: float = 0.0
) -> AsyncIterator[None]:
    """Hold one of the tenant's ``limit`` places on this loop while the block runs. A
    ``bursting`` tenant's call, while other tenants' work runs or waits, waits for no other
    bursting call to run and ``pace_s`` (its plan's interval) since its last (``_Fair``)."""
    loop = asyncio.get_running_loop()
    fair = _fair.get(loop)
    if fair is None:
        fair = _fair[loop] = _Fair(loop)
    # A tenant's calls keep their order: behind its own waiters, never past them.
    if tenant_id not in fair.queued and fair.may_start(tenant_id, limit, bursting):
        fair.start(tenant_id, bursting, pace_s)
    else:
        waiter = _Waiter(tenant_id, limit, bursting, pace_s, loop.create_future())
        fair.wait(waiter)
        fair.wake()  # a paced waiter needs its timer even if no call ends before its time
        try:
            await waiter.ready
        except asyncio.CancelledError:
            if waiter.ready.done() and not waiter.ready.cancelled():
                fair.finish(tenant_id, bursting)  # started just as it was cancelled
            else:
                fair.wake()  # a steady waiter leaving may free a bursting one
            raise
    try:
        yield
    finally:
        fair.finish(tenant_id, bursting)


def reset() -> None:
    """Forget every bucket, full window and gate (tests; a plan change takes effect by itself)."""
    with _lock:
        _buckets.clear()
        _full.clear()
        _held.clear()
        _tight.clear()
        _fair.clear()
