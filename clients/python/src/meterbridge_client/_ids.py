"""Time-ordered event ids (UUIDv7, RFC 9562).

48 bits of Unix milliseconds, then 74 random bits. Ids from one process are strictly
increasing: within one millisecond the 12-bit ``rand_a`` field is a counter (RFC 9562
section 6.2, method 1), and a full counter borrows the next millisecond. Built here because
the standard library has ``uuid.uuid7`` only from Python 3.14, and formatted by hand because
``str(uuid.UUID(...))`` costs more than the rest of the id.

Random bits come from ``os.urandom`` read 4,000 bytes at a time (one system call per 400 ids,
not one per id); a forked child drops the parent's unused bytes so it never repeats its ids.
"""

from __future__ import annotations

import os
import threading
import time

_POOL_BYTES = 4000
# The first hex digit of the last 64 bits carries the variant (0b10): keep its low 2 bits.
_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}
_lock = threading.Lock()
_last_ms = 0
_counter = 0
_pool = ""  # random bytes, as hex
_at = 0


def _forget_pool() -> None:
    global _pool, _at, _lock
    _pool, _at, _lock = "", 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def uuid7_ms() -> tuple[str, int]:
    """A new UUIDv7 (canonical 36-character string) and the Unix milliseconds in it."""
    global _last_ms, _counter, _pool, _at
    now_ms = time.time_ns() // 1_000_000
    with _lock:
        if _at + 20 > len(_pool):
            _pool, _at = os.urandom(_POOL_BYTES).hex(), 0
        at = _at
        _at += 20
        if now_ms > _last_ms:
            _last_ms = now_ms
            # a random start (11 bits) leaves room to count within the millisecond
            _counter = int(_pool[at : at + 3], 16) >> 1
        else:
            _counter += 1
            if _counter > 0xFFF:
                _last_ms += 1
                _counter = 0
        ms, counter = _last_ms, _counter
        rand = _pool[at + 3 : at + 19]  # 64 random bits as hex; the variant takes 2
    h = "%012x" % ms  # noqa: UP031
    return (
        f"{h[:8]}-{h[8:]}-7{counter:03x}-{_VARIANT[rand[0]]}{rand[1:4]}-{rand[4:16]}",
        ms,
    )


def uuid7() -> str:
    """A new UUIDv7 as its canonical 36-character string."""
    return uuid7_ms()[0]
