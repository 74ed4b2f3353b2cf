"""What a paced ``record()`` sample is made of: the same schedule (1,000 calls/s) for
``record()`` with its sender thread running, ``record()`` with the sender held back (no
background thread takes the GIL), an empty call with the same arguments, and ``json.dumps``
of the same event; each paced by ``time.sleep`` (the caller idles between calls, as a
service does) and by a spin on the clock (the core stays awake, caches stay warm), the
eight cases interleaved round by round so load that comes and goes hits them alike.

    python -m bench.client.latency [--rounds 5] [--calls 1000]   (needs bench.client.stub)

Method and analysis: docs/performance/client.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from meterbridge_client import Client, Stats
from meterbridge_client._core import ENCODE_TICK

RATE = 1000  # calls/s

Call = Callable[[int], Any]


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Samples:
    """Per call: the wall time (what the caller waits), the thread's own CPU time over the
    same call (``wall - cpu``: the time the thread was off the CPU, preempted by another
    process or waiting for the GIL), and whether a garbage-collection pass ran in it.
    Microseconds."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.gc: list[bool] = []

    def extend(self, other: Samples) -> None:
        self.wall += other.wall
        self.cpu += other.cpu
        self.gc += other.gc


_gc_passes = [0]


def _count_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _gc_passes[0] += 1


def paced(n: int, rate: float | None, call: Call, spin: bool = False) -> Samples:
    """Call ``call(i)`` n times at ``rate`` per second (back to back when None): wait for
    each slot by ``time.sleep`` or, with ``spin``, by reading the clock until it comes (the
    GIL is held meanwhile, as by any busy caller). Each call is timed alone with
    ``perf_counter_ns`` (vDSO, tens of ns), inside a pair of thread-CPU-time reads."""
    wall, cpu, passes = [0] * n, [0] * n, [0] * n
    clock, now, sleep, cpu_clock = (
        time.perf_counter_ns,
        time.perf_counter,
        time.sleep,
        time.thread_time_ns,
    )
    gcn = _gc_passes
    if _count_gc not in gc.callbacks:
        gc.callbacks.append(_count_gc)
    start = now()
    for i in range(n):
        if rate is not None:
            slot = start + i / rate
            if spin:
                while now() < slot:
                    pass
            else:
                delay = slot - now()
                if delay > 0:
                    sleep(delay)
        g0 = gcn[0]
        c0 = cpu_clock()
        t0 = clock()
        call(i)
        t1 = clock()
        c1 = cpu_clock()
        wall[i] = t1 - t0
        cpu[i] = c1 - c0
        passes[i] = gcn[0] - g0
    out = Samples()
    out.wall = [x / 1000 for x in wall]
    out.cpu = [x / 1000 for x in cpu]
    out.gc = [bool(x) for x in passes]
    return out


class HeldClient(Client):
    """A Client whose sender is held back until ``release()``: meanwhile it only keeps
    record()'s id pool filled (every ``ENCODE_TICK``, a few tens of microseconds), and neither
    encodes nor posts; record() runs the very same code."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._go = threading.Event()
        super().__init__(*args, **kwargs)

    def _run(self) -> None:
        while not self._go.wait(ENCODE_TICK):
            self._core.ids.fill()
        super()._run()

    def release(self) -> None:
        self._go.set()


def _nothing(type: str, data: dict[str, Any] | None = None) -> None:
    return None


RUNNING, HELD, EMPTY, DUMPS = (
    "record(), sender running",
    "record(), sender held",
    "empty call, same args",
    "json.dumps of the event",
)


def cases(running: Client, held: Client) -> dict[str, Call]:
    """Each case gets the same arguments, built the same way, inside the timed call."""
    dumps = json.dumps
    return {
        RUNNING: lambda i: running.record("api.call", {"tokens": i % 977}),
        HELD: lambda i: held.record("api.call", {"tokens": i % 977}),
        EMPTY: lambda i: _nothing("api.call", {"tokens": i % 977}),
        DUMPS: lambda i: dumps({"id": "x", "type": "api.call", "data": {"tokens": i % 977}}),
    }


def measure(
    url: str, key: str, rounds: int, calls: int, tight_calls: int
) -> tuple[dict[tuple[str, str], Samples], dict[str, Samples], Stats]:
    """Interleaved: every round runs each pacing, each case, ``calls`` calls; then each case
    ``tight_calls`` times back to back (the work itself, caches warm). Also the running
    client's counters."""
    running = Client(key, url, close_at_exit=False)
    held = HeldClient(key, url, close_at_exit=False)
    try:
        out: dict[tuple[str, str], Samples] = {}
        todo = cases(running, held)
        for call in todo.values():  # warm-up: first calls, first batch
            paced(50, None, call)
        for _ in range(rounds):
            for pacing in ("sleep", "spin"):
                for name, call in todo.items():
                    samples = paced(calls, RATE, call, spin=pacing == "spin")
                    out.setdefault((pacing, name), Samples()).extend(samples)
        tight = {name: paced(tight_calls, None, call) for name, call in todo.items()}
        held.release()
        assert running.flush(timeout=120) and held.flush(timeout=120)
    finally:
        held.release()
        running.close()
        held.close()
    for client in (running, held):
        s = client.stats()
        assert s.sent == s.recorded and not s.dropped and not s.rejected, s
    return out, tight, running.stats()


def report(paced_out: dict[tuple[str, str], Samples], tight: dict[str, Samples]) -> list[str]:
    lines = [
        f"record() at {RATE:,} calls/s beside its floors, same schedule, rounds interleaved "
        f"(switch interval {sys.getswitchinterval() * 1e3:g} ms); us per call. wall: what the "
        "caller waits; cpu: the thread's own CPU time in the call; off: wall - cpu, p99 of the "
        "samples (preempted, or waiting for the GIL), and how many calls were off it over 5 us; "
        "gc: calls with a GC pass, p99 without them",
        f"{'pacing':6} {'case':27} {'calls':>6} {'wall p50':>8} {'p99':>6} {'p99.9':>7} "
        f"{'cpu p50':>7} {'p99':>6} {'off p99':>7} {'>5':>4} {'gc':>4} {'p99 w/o':>7}",
    ]
    rows = [(pacing, name, s) for (pacing, name), s in paced_out.items()]
    rows += [("none", name, s) for name, s in tight.items()]
    for pacing, name, s in rows:
        off = [w - c for w, c in zip(s.wall, s.cpu, strict=True)]
        no_gc = [w for w, g in zip(s.wall, s.gc, strict=True) if not g] or [0.0]
        lines.append(
            f"{pacing:6} {name:27} {len(s.wall):>6} {pct(s.wall, 0.5):>8.1f} "
            f"{pct(s.wall, 0.99):>6.1f} {pct(s.wall, 0.999):>7.1f} {pct(s.cpu, 0.5):>7.1f} "
            f"{pct(s.cpu, 0.99):>6.1f} {pct(off, 0.99):>7.1f} {sum(x > 5 for x in off):>4} "
            f"{sum(s.gc):>4} "
            f"{pct(no_gc, 0.99):>7.1f}"
        )
    lines.append(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return lines


def main() -> int:
    from bench.client.__main__ import start, stop

    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()
    children: list[Any] = []
    try:
        stub = start(children, "bench.client.stub")
        out, tight, _ = measure(stub["url"], "bench-key", args.rounds, args.calls, args.calls)
    finally:
        stop(children)
    print("\n".join(report(out, tight)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
