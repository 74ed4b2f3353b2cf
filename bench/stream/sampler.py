"""A small CPU-time sampling profiler for the relay processes (``--profile`` of the bench).

cProfile's per-call overhead inflates exactly what the relay does most (many tiny calls
per delivery); sampling the Python stack every millisecond of CPU time (``ITIMER_PROF``:
user + system time, so time in ``send(2)`` lands on the frame that called it) shows where
the CPU goes at about 2% overhead.
"""

from __future__ import annotations

import gc
import signal
import time
from collections import Counter
from pathlib import Path
from types import FrameType

INTERVAL_S = 0.001


class Sampler:
    def __init__(self) -> None:
        self.self_counts: Counter[str] = Counter()
        self.total_counts: Counter[str] = Counter()
        self.samples = 0
        self.gc_s = [0.0, 0.0, 0.0]
        self.gc_runs = [0, 0, 0]
        self.cpu_s = 0.0
        self._cpu0 = self._gc_started = 0.0

    def start(self) -> None:
        signal.signal(signal.SIGPROF, self._sample)
        signal.setitimer(signal.ITIMER_PROF, INTERVAL_S, INTERVAL_S)
        gc.callbacks.append(self._gc)
        self._cpu0 = time.process_time()

    def stop(self) -> None:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        self.cpu_s = time.process_time() - self._cpu0
        if self._gc in gc.callbacks:
            gc.callbacks.remove(self._gc)

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        # The collector runs in C, invisible to the stack samples: time it separately.
        if phase == "start":
            self._gc_started = time.process_time()
        else:
            generation = info["generation"]
            self.gc_s[generation] += time.process_time() - self._gc_started
            self.gc_runs[generation] += 1

    def _sample(self, signum: int, frame: FrameType | None) -> None:
        self.samples += 1
        seen: set[str] = set()
        leaf = True
        while frame is not None:
            code = frame.f_code
            name = f"{_short(code.co_filename)}:{code.co_firstlineno}({code.co_name})"
            if leaf:
                self.self_counts[name] += 1
                leaf = False
            if name not in seen:
                seen.add(name)
                self.total_counts[name] += 1
            frame = frame.f_back

    def report(self, path: str, top: int = 40) -> None:
        n = max(self.samples, 1)
        lines = [f"{self.samples} samples of {INTERVAL_S * 1000:.0f} ms CPU time"]
        lines.append(f"CPU {self.cpu_s:.2f} s; garbage collector by generation:")
        for gen in range(3):
            lines.append(f"  gen{gen}: {self.gc_runs[gen]} runs, {self.gc_s[gen]:.3f} s")
        lines += ["", "self:"]
        lines += [f"{100 * c / n:6.1f}%  {name}" for name, c in self.self_counts.most_common(top)]
        lines += ["", "inclusive:"]
        lines += [f"{100 * c / n:6.1f}%  {name}" for name, c in self.total_counts.most_common(top)]
        Path(path).write_text("\n".join(lines) + "\n")


def _short(filename: str) -> str:
    for marker in ("site-packages/", "shared/", "lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename
