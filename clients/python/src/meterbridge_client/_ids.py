"""Time-ordered event ids (UUIDv7, RFC 9562).

48 bits of Unix milliseconds, the version, then 74 bits that make the id unique: 26 drawn
from ``os.urandom`` once per process (again in a forked child), and a 48-bit counter started
at a random point (a dedicated counter, RFC 9562 section 6.2). Ids from ``uuid7()`` in one
thread are strictly increasing while the wall clock does not step back; two processes share
an id only if they mint in the same millisecond with the same 26 random bits and overlapping
counter ranges. Built here because the standard library has ``uuid.uuid7`` only from Python 3.14.

An id costs one clock read, one ``next()`` on an ``itertools.count`` (atomic: no lock) and
two ``hex()`` calls; no per-id randomness to draw. Even that is most of what record() would
do, so a client's sender mints its ids ahead, in an ``IdPool``, and record() takes the next
one (``deque.popleft``, atomic) unless the pool is empty or was filled over ``POOL_AGE_MS``
ago: then it mints its own. A pooled id's timestamp is its minting time, at most
``POOL_AGE_MS`` before its record time; ids stay unique (one counter per process) and are
fixed when recorded. After ``fork`` every pool is emptied: the parent's pooled ids are the
parent's.
"""

from __future__ import annotations

import itertools
import os
import time
import weakref
from collections import deque

_BIT48 = 1 << 48  # hex(x | _BIT48)[3:]: x's 12 hex digits, cheaper than a "%012x" format
_MASK48 = _BIT48 - 1
_time_ns = time.time_ns
_mid = ""
_count = itertools.count()
POOL_SIZE = 256  # ids minted ahead per client: 0.25 s at 1,000 events/s, the sender refills
POOL_AGE_MS = 1000


class IdPool:
    """Ids minted ahead by a sender (``fill``), taken by record() (``ids.popleft()``) while
    ``since``, the minting time of the oldest, is under ``POOL_AGE_MS`` old. record() sets
    ``wanted`` when it found none to take, so an idle client's pool is not kept fresh."""

    __slots__ = ("__weakref__", "ids", "since", "wanted")

    def __init__(self) -> None:
        self.ids: deque[str] = deque()
        self.since = 0
        self.wanted = True
        _pools.add(self)

    def fill(self) -> None:
        """Top the pool up to ``POOL_SIZE`` ids; when it is empty or too old, start afresh if
        record() wanted ids since the last fill."""
        ms = _time_ns() // 1_000_000
        ids = self.ids
        if ids and ms - self.since < POOL_AGE_MS:
            short = POOL_SIZE - len(ids)
        else:
            ids.clear()
            if not self.wanted:
                return
            self.since = ms
            short = POOL_SIZE
        self.wanted = False
        if short > 0:
            h = hex(ms | _BIT48)
            head = f"{h[3:11]}-{h[11:]}{_mid}"
            ids.extend([head + hex((next(_count) & _MASK48) | _BIT48)[3:] for _ in range(short)])


_pools: weakref.WeakSet[IdPool] = weakref.WeakSet()


def _draw() -> None:
    """The process's random bits: ``7`` + 12 bits, the variant (``10``) + 14 bits."""
    global _mid, _count
    r = int.from_bytes(os.urandom(12), "big")
    rand_a = r & 0xFFF
    rand_b_top = 0x8000 | ((r >> 12) & 0x3FFF)
    _mid = f"-7{rand_a:03x}-{rand_b_top:04x}-"
    # started in the lower half of its range: 2**47 ids before it could wrap
    _count = itertools.count((r >> 26) & ((1 << 47) - 1))
    for pool in list(_pools):
        pool.ids.clear()


_draw()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_draw)


def uuid7_ms() -> tuple[str, int]:
    """A new UUIDv7 (canonical 36-character string) and the Unix milliseconds in it."""
    ms = _time_ns() // 1_000_000
    return uuid7_at(ms), ms


def uuid7_at(ms: int) -> str:
    """A new UUIDv7 stamped with ``ms``."""
    h = hex(ms | _BIT48)
    return f"{h[3:11]}-{h[11:]}{_mid}{hex((next(_count) & _MASK48) | _BIT48)[3:]}"


def uuid7() -> str:
    """A new UUIDv7 as its canonical 36-character string."""
    return uuid7_ms()[0]
