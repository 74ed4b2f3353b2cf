"""Time-ordered event ids (UUIDv7, RFC 9562).

48 bits of Unix milliseconds, then 74 random bits. Ids from one process are strictly
increasing: within one millisecond the 12-bit ``rand_a`` field is a counter (RFC 9562
section 6.2, method 1), and a full counter borrows the next millisecond. Built here because
the standard library has ``uuid.uuid7`` only from Python 3.14, and formatted by hand because
``str(uuid.UUID(...))`` costs more than the rest of the id.

Random bits come from ``os.urandom`` read 4 KiB at a time (one system call per 400 ids, not
one per id); a forked child drops the parent's unused bytes so it never repeats its ids.
"""

from __future__ import annotations

import os
import threading
import time

_POOL_BYTES = 4000
_lock = threading.Lock()
_last_ms = 0
_counter = 0
_pool = b""
_at = 0


def _forget_pool() -> None:
    global _pool, _at, _lock
    _pool, _at, _lock = b"", 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def uuid7_ms() -> tuple[str, int]:
    """A new UUIDv7 (canonical 36-character string) and the Unix milliseconds in it."""
    global _last_ms, _counter, _pool, _at
    now_ms = time.time_ns() // 1_000_000
    with _lock:
        if _at + 10 > len(_pool):
            _pool, _at = os.urandom(_POOL_BYTES), 0
        at = _at
        _at += 10
        if now_ms > _last_ms:
            _last_ms = now_ms
            # a random start (11 bits) leaves room to count within the millisecond
            _counter = int.from_bytes(_pool[at : at + 2], "big") >> 5
        else:
            _counter += 1
            if _counter > 0xFFF:
                _last_ms += 1
                _counter = 0
        ms, counter, tail = _last_ms, _counter, _pool[at + 2 : at + 10]
    h = (
        ms.to_bytes(6, "big")
        + (0x7000 | counter).to_bytes(2, "big")
        + bytes((0x80 | (tail[0] & 0x3F),))
        + tail[1:]
    ).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}", ms


def uuid7() -> str:
    """A new UUIDv7 as its canonical 36-character string."""
    return uuid7_ms()[0]
