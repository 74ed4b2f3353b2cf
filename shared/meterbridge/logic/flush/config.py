"""What every part of one flush run shares: its tuning, clock, deadline, stop and counts.

``Run`` is made once per run (``runner.Flusher``) and handed to the parts that read the
outbox (``legacy``, ``reader``), deliver (``delivery``) and republish (``republish``).
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from meterbridge.adapters.openmeter import OpenMeterMisconfigured
from meterbridge.dal.outbox import segments
from meterbridge.errors import StorageUnavailable
from meterbridge.models.flush import FlushConfig, FlushResult, StopReason
from meterbridge.observability import logger

_T = TypeVar("_T")

# Half the stream's 24-hour retention (docs/flush.md).
PARK_AFTER_S = 12 * 3600
# A recovery window reaches this far past both ends: an event's ``accepted_at`` is stamped
# before its transaction commits (and on the Lambda's clock), so its stream position can be a
# little out of step with it. A margin costs only re-sends, which OpenMeter drops.
RECOVERY_MARGIN_S = 600
# Stream records younger than JetStream's duplicate window less this are published again.
REPUBLISH_MARGIN_S = 60


def shard_order() -> list[str]:
    """The index shards (segments, republish markers) from a random first one."""
    first = random.randrange(segments.OUTBOX_SHARDS)
    return [str((first + i) % segments.OUTBOX_SHARDS) for i in range(segments.OUTBOX_SHARDS)]


class Run:
    """One run's shared state. Thread-safe where workers touch it (counts and the stop)."""

    def __init__(
        self,
        *,
        config: FlushConfig,
        request_timeout_s: float,
        remaining_ms: Callable[[], int] | None,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.request_timeout_s = request_timeout_s
        self.remaining_ms = remaining_ms
        self.clock = clock
        self.owner = f"flush-{uuid.uuid4().hex}"
        self.result = FlushResult()
        self.stop: StopReason | None = None
        self.db: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    # -- time ----------------------------------------------------------------------------

    def left_s(self) -> float:
        """Seconds this run may still spend before its safety margin (inf without a deadline)."""
        if self.remaining_ms is None:
            return float("inf")
        return (self.remaining_ms() - self.config.safety_ms) / 1000.0

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def lease_ms(self) -> int:
        return int(self.config.lease_s * 1000)

    def can_start_request(self) -> bool:
        return self.left_s() >= min(self.request_timeout_s, self.config.send_budget_s)

    def send_budget_s(self) -> float:
        """No batch (with every retry and backoff) may outlive its lease nor the run's margin."""
        cfg = self.config
        return min(cfg.send_budget_s, cfg.lease_s * 0.75, self.left_s())

    # -- the stop and the counts -----------------------------------------------------------

    def stop_run(self, reason: StopReason) -> None:
        with self._lock:
            if self.stop is None:
                self.stop = reason

    def stopped_hard(self) -> bool:
        """Past its deadline or without storage: nothing more is read, sent or parked."""
        return self.stop in ("deadline", "storage")

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self.result, name, getattr(self.result, name) + value)

    def stopped_by(self, exc: Exception) -> None:
        """A batch OpenMeter or storage did not take: count its attempts and stop sending."""
        reason: StopReason = (
            "openmeter_misconfigured"
            if isinstance(exc, OpenMeterMisconfigured)
            else "storage"
            if isinstance(exc, StorageUnavailable)
            else "openmeter_unavailable"
        )
        attempts = getattr(exc, "attempts", 1)
        self.add(retried=max(0, attempts - 1), failed_requests=attempts)
        log = logger.error if reason == "openmeter_misconfigured" else logger.warning
        error = getattr(exc, "message", None) or str(exc)
        log("flush batch not delivered", extra={"reason": reason, "error": error})
        self.stop_run(reason)

    # -- DynamoDB fan-out ----------------------------------------------------------------

    def db_map(self, fn: Callable[[_T], bool], items: Sequence[_T]) -> list[bool]:
        if self.db is None or len(items) == 1:
            return [fn(item) for item in items]
        return list(self.db.map(fn, items))
