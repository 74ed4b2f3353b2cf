"""A circuit breaker (closed, open, half-open) shared by the NATS and OpenMeter clients.

Closed: calls go through; ``failure_threshold`` consecutive failures open it. Open: calls are
refused at once for ``reset_timeout_s``. Half-open: one trial call; success closes the
circuit, failure opens it again. The state is exported as a metric by its owners
(0 closed, 1 open, 2 half-open).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import IntEnum


class BreakerState(IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        reset_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, BreakerState], None] | None = None,
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._current()

    def _current(self) -> BreakerState:
        if (
            self._state is BreakerState.OPEN
            and self._clock() - self._opened_at >= self.reset_timeout_s
        ):
            self._set(BreakerState.HALF_OPEN)
            self._trial_in_flight = False
        return self._state

    def _set(self, state: BreakerState) -> None:
        if state is not self._state:
            self._state = state
            if self._on_change:
                self._on_change(self.name, state)

    def allow(self) -> bool:
        """May a call go through now? In half-open, only one trial at a time."""
        with self._lock:
            state = self._current()
            if state is BreakerState.CLOSED:
                return True
            if state is BreakerState.HALF_OPEN and not self._trial_in_flight:
                self._trial_in_flight = True
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._trial_in_flight = False
            self._set(BreakerState.CLOSED)

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            self._trial_in_flight = False
            if self._state is BreakerState.HALF_OPEN or self._failures >= self.failure_threshold:
                self._opened_at = self._clock()
                self._set(BreakerState.OPEN)

    def seconds_until_trial(self) -> float:
        with self._lock:
            if self._current() is not BreakerState.OPEN:
                return 0.0
            return max(0.0, self.reset_timeout_s - (self._clock() - self._opened_at))
