"""One flush run, step by step (docs/flush.md#one-run): the segments of the old layout, the
backlog, the stream, its gaps, NATS, then what is left."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from meterbridge.adapters.openmeter import OpenMeterClient
from meterbridge.dal.outbox import ledger, stream
from meterbridge.dal.outbox.repository import DynamoOutbox
from meterbridge.errors import StorageUnavailable
from meterbridge.logic.flush.config import Run
from meterbridge.logic.flush.delivery import Deliverer
from meterbridge.logic.flush.legacy import SegmentDrain
from meterbridge.logic.flush.reader import StreamReader
from meterbridge.logic.flush.recovery import Recovery
from meterbridge.logic.flush.republish import Republisher
from meterbridge.models.flush import FlushConfig, FlushResult
from meterbridge.observability import logger


class Flusher:
    """One flush run. Not reusable: make one per run."""

    def __init__(
        self,
        *,
        table: str,
        client: OpenMeterClient,
        config: FlushConfig | None = None,
        remaining_ms: Callable[[], int] | None = None,
        clock: Callable[[], float] = time.time,
        send_enabled: bool = True,
        publisher: Any = None,
        lease_table: str | None = None,
    ) -> None:
        self.table = table
        self.client = client
        self.send_enabled = send_enabled
        # Checkpoints, backlog and counters live in the idempotency table whatever the tuning.
        self.lease_ledger = lease_table
        self.run_state = Run(
            config=config or FlushConfig(),
            request_timeout_s=client.timeout_s,
            remaining_ms=remaining_ms,
            clock=clock,
        )
        self.outbox = DynamoOutbox(table, lease_table)
        self.republisher = Republisher(self.run_state, self.outbox, publisher)
        deliverer = Deliverer(self.run_state, client, self.outbox)
        self.segments = SegmentDrain(
            self.run_state,
            self.outbox,
            deliverer,
            table=table,
            lease_table=lease_table if self.run_state.config.shard_leases else None,
        )
        self.reader: StreamReader | None = None
        self.recovery: Recovery | None = None
        if lease_table is not None:
            self.reader = StreamReader(
                self.run_state,
                self.outbox,
                deliverer,
                self.republisher,
                table=table,
                lease_table=lease_table,
                send_enabled=send_enabled,
            )
            self.recovery = Recovery(
                self.run_state, self.reader, table=table, lease_table=lease_table
            )

    @property
    def result(self) -> FlushResult:
        return self.run_state.result

    def run(self) -> FlushResult:
        state = self.run_state
        started = time.monotonic()
        with ThreadPoolExecutor(state.config.db_workers, thread_name_prefix="flush-db") as db:
            state.db = db
            try:
                if self.send_enabled:
                    self.segments.drain()
                    if self.reader is not None:
                        self.reader.drain_backlog()
                if self.reader is not None:
                    self.reader.drain_stream()
                if self.recovery is not None:
                    self.recovery.fill_all()
                if self.republisher.enabled():
                    self.republisher.marked()
                state.result.remaining = self._remaining()
            except StorageUnavailable as exc:
                logger.warning("flush stopped: storage unavailable", extra={"error": exc.message})
                state.stop_run("storage")
            finally:
                state.db = None
        state.result.stopped = state.stop
        state.result.duration_ms = int((time.monotonic() - started) * 1000)
        return state.result

    def _remaining(self) -> int:
        """Events waiting: the ledger's backlog, the stream's tail when this run left part of
        it unread, and the segment layout's pending segments while any are left. No index is
        counted whole."""
        left = 0
        if self.lease_ledger is not None:
            if self.reader is not None and self.reader.incomplete:
                left += stream.unread(self.lease_ledger, self.table)[0]
            counts = ledger.read(self.lease_ledger, self.table)
            left += counts["backlog"]
            if not counts["dead_seeded"]:
                # Once, after an upgrade: the dead letters the segment layout left.
                ledger.seed_dead(self.lease_ledger, self.table, self.outbox.count_dead_letters())
        return left + self.segments.pending()
