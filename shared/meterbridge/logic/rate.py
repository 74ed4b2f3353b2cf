"""Per-tenant request rate limits, the same budget on every tenant route.

``check`` is called by ingest (``POST /v1/events``), the usage read (``GET /v1/usage``),
stream-token issuance and stream connects. Two layers, cheapest first:

1. An in-process token bucket per tenant: refills at the plan's ``requests_per_minute``/60 per
   second and holds ``BURST_S`` seconds of it (at least ``MIN_BURST`` requests). A tenant
   bursting far above its plan is refused here, with no I/O, so its flood costs the process
   little and leaves other tenants' latency alone (bench/flood).
2. The plan's ``requests_per_minute`` across every process: a conditional ADD on this minute's
   counter in DynamoDB (sharded for the large plans). Once a window is refused, the process
   remembers it until the minute ends, so further requests in that minute cost no write.

A refusal is ``429 rate_limited`` with ``Retry-After``. A token bucket rather than a library:
one float pair per tenant, nothing to import at a cold start.
"""

from __future__ import annotations

import math
import random
import threading
import time
from datetime import datetime

from meterbridge.dal import usage as usage_dal
from meterbridge.errors import RateLimited
from meterbridge.observability import metrics
from meterbridge.plans import Plan
from meterbridge.settings import Settings

BURST_S = 10.0
MIN_BURST = 100.0

_lock = threading.Lock()
# tenant -> (tokens, monotonic time of that count)
_buckets: dict[str, tuple[float, float]] = {}
# tenant -> the minute (YYYYmmddHHMM) whose shared window is known to be full
_full: dict[str, str] = {}


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


def take_shared(tenant_id: str, plan: Plan, settings: Settings, now: datetime) -> None:
    """One request in this minute's DynamoDB window (every process), or ``RateLimited``."""
    minute = now.strftime("%Y%m%d%H%M")
    retry = 60 - now.second
    message = f"more than {plan.requests_per_minute} requests per minute"
    if _full.get(tenant_id) == minute:
        raise _limited(message, retry)
    shards = 1 if plan.requests_per_minute <= 1000 else usage_dal.RATE_SHARDS
    cap = -(-plan.requests_per_minute // shards)
    expires = int(now.timestamp()) + 3600
    first = random.randrange(shards)
    for step in range(min(shards, 2)):
        if usage_dal.take_rate_slot(
            settings.usage_table, tenant_id, minute, (first + step) % shards, cap, expires
        ):
            return
    _full[tenant_id] = minute
    raise _limited(message, retry)


def check(tenant_id: str, plan: Plan, settings: Settings, now: datetime) -> None:
    """Both layers: the local bucket first (no I/O), then the shared minute window."""
    take_local(tenant_id, plan)
    take_shared(tenant_id, plan, settings, now)


def reset() -> None:
    """Forget every bucket and full window (tests; a plan change takes effect by itself)."""
    with _lock:
        _buckets.clear()
        _full.clear()
