"""Time-ordered event ids (UUIDv7, RFC 9562).

48 bits of Unix milliseconds, the version, then 74 bits that make the id unique: 26 drawn
from ``os.urandom`` once per process (again in a forked child), and a 48-bit counter started
at a random point (a dedicated counter, RFC 9562 section 6.2). Ids from one thread are
strictly increasing while the wall clock does not step back; two processes share an id only
if they record in the same millisecond with the same 26 random bits and overlapping counter
ranges. Built here because the standard library has ``uuid.uuid7`` only from Python 3.14.

This is record()'s main cost, so it is one clock read, one ``next()`` on an
``itertools.count`` (atomic: no lock) and two ``hex()`` calls; no per-id randomness to draw.
"""

from __future__ import annotations

import itertools
import os
import time

_BIT48 = 1 << 48  # hex(x | _BIT48)[3:]: x's 12 hex digits, cheaper than a "%012x" format
_MASK48 = _BIT48 - 1
_time_ns = time.time_ns
_mid = ""
_count = itertools.count()


def _draw() -> None:
    """The process's random bits: ``7`` + 12 bits, the variant (``10``) + 14 bits."""
    global _mid, _count
    r = int.from_bytes(os.urandom(12), "big")
    rand_a = r & 0xFFF
    rand_b_top = 0x8000 | ((r >> 12) & 0x3FFF)
    _mid = f"-7{rand_a:03x}-{rand_b_top:04x}-"
    # started in the lower half of its range: 2**47 ids before it could wrap
    _count = itertools.count((r >> 26) & ((1 << 47) - 1))


_draw()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_draw)


def uuid7_ms() -> tuple[str, int]:
    """A new UUIDv7 (canonical 36-character string) and the Unix milliseconds in it."""
    ms = _time_ns() // 1_000_000
    h = hex(ms | _BIT48)
    return f"{h[3:11]}-{h[11:]}{_mid}{hex((next(_count) & _MASK48) | _BIT48)[3:]}", ms


def uuid7() -> str:
    """A new UUIDv7 as its canonical 36-character string."""
    return uuid7_ms()[0]
