"""``last_used_at`` of API keys: recorded at most once a minute per key, off the request path.

After a successful authentication the usage API calls ``note_used``. A per-process map skips
keys written in the last minute without any I/O; otherwise one background thread asks the key
repository to ``touch`` the key (a conditional write), which holds the once-a-minute bound
across processes too. A failed write is logged and forgotten: it never fails
or slows a request.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from meterbridge.dal import keys as keys_dal
from meterbridge.errors import MeterbridgeError
from meterbridge.observability import logger
from meterbridge.settings import Settings, get_settings
from meterbridge.timestamps import rfc3339

INTERVAL_S = 60.0

_last: dict[str, float] = {}
_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="key-last-used")
        return _pool


def record(lookup_id: str, settings: Settings, now: datetime | None = None) -> bool:
    """Write ``last_used_at`` now unless it was written in the last minute (True if written)."""

    now = now or datetime.now(UTC)
    since = now - timedelta(seconds=INTERVAL_S)
    return keys_dal.repository(settings).touch(lookup_id, rfc3339(now), rfc3339(since))


def _write(lookup_id: str, settings: Settings) -> None:

    try:
        record(lookup_id, settings)
    except MeterbridgeError as exc:
        with _lock:
            _last.pop(lookup_id, None)  # try again with the next request
        logger.warning("key last_used_at not recorded", extra={"error": exc.code})


def note_used(lookup_id: str, settings: Settings | None = None) -> None:
    """Schedule a ``last_used_at`` write for the key if this process has not made one lately."""
    now = time.monotonic()
    with _lock:
        last = _last.get(lookup_id)
        if last is not None and now - last < INTERVAL_S:
            return
        _last[lookup_id] = now
    _executor().submit(_write, lookup_id, settings or get_settings())


def wait_idle(timeout_s: float = 10.0) -> None:
    """Block until the scheduled writes are done (tests, shutdown)."""
    _executor().submit(lambda: None).result(timeout=timeout_s)


def reset() -> None:
    with _lock:
        _last.clear()
