"""Drain the segment layout of the outbox (before issue 16), left after an upgrade.

Per shard of the ``outbox`` index, held with a shard lease: read pages of segments, cut them
into claim groups, and have workers claim, POST and mark each group (docs/flush.md, step 1).
Nothing is marked before OpenMeter acknowledged every event in it; what a stop interrupts is
released for the next run.
"""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from functools import partial
from typing import Any

from meterbridge.adapters.openmeter import OpenMeterMisconfigured, OpenMeterUnavailable
from meterbridge.dal.outbox import shard_leases
from meterbridge.dal.outbox.repository import DynamoOutbox
from meterbridge.errors import StorageUnavailable
from meterbridge.logic.flush.config import Run, shard_order
from meterbridge.logic.flush.delivery import Deliverer, Delivery, packed
from meterbridge.models.cloudevent import now_rfc3339
from meterbridge.models.outbox import Segment
from meterbridge.observability import logger


class _Shard:
    """A shard this run leases: released once it is paged through and its batches are done."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.open_batches = 0
        self.paged = False
        self.released = False


class SegmentDrain:
    def __init__(
        self,
        run: Run,
        outbox: DynamoOutbox,
        deliverer: Deliverer,
        *,
        table: str,
        lease_table: str | None,
    ) -> None:
        self.run = run
        self.outbox = outbox
        self.deliverer = deliverer
        self.table = table
        self.lease_table = lease_table
        self._lock = threading.Lock()
        self._inflight: set[Future[None]] = set()
        self._shards_held: dict[str, _Shard] = {}

    def _settle(self, below: int) -> None:
        """Wait until fewer than ``below + 1`` batches are queued or in flight."""
        while len(self._inflight) > below:
            done, pending = wait(self._inflight, return_when=FIRST_COMPLETED)
            self._inflight = set(pending)
            for future in done:
                future.result()  # a crash in a worker ends the run here, leases held

    def drain(self) -> None:
        with ThreadPoolExecutor(
            self.run.config.concurrency, thread_name_prefix="flush-send"
        ) as pool:
            try:
                # The segment layout (before the stream): drained after an upgrade, then each
                # shard costs one empty one-item query a run (docs/flush.md#migration).
                busy = [s for s in shard_order() if self.outbox.any_pending(s)]
                deferred = [s for s in busy if not self._drain_shard(s, pool)]
                # Shards another run held a moment ago: it may have finished them since.
                for shard in deferred:
                    if self.run.stop is not None:
                        break
                    self._drain_shard(shard, pool)
            finally:
                try:
                    self._settle(0)
                finally:
                    for held in list(self._shards_held.values()):
                        self._release_shard(held, force=True)

    def pending(self) -> int:
        """Events its pending segments hold (0, with one empty query a shard, once drained)."""
        busy = [s for s in shard_order() if self.outbox.any_pending(s)]
        return self.outbox.count_pending() if busy else 0

    def _lease_shard(self, name: str) -> bool:
        if self.lease_table is None:
            return True
        return shard_leases.acquire_shard(
            self.lease_table,
            self.table,
            name,
            owner=self.run.owner,
            now_ms=self.run.now_ms(),
            lease_ms=self.run.lease_ms(),
        )

    def _release_shard(self, shard: _Shard, *, force: bool = False) -> None:
        with self._lock:
            if shard.released or not (force or (shard.paged and shard.open_batches == 0)):
                return
            shard.released = True
            self._shards_held.pop(shard.name, None)
        if self.lease_table is not None:
            # If DynamoDB refuses, the lease simply expires.
            with contextlib.suppress(StorageUnavailable):
                shard_leases.release_shard(
                    self.lease_table, self.table, shard.name, owner=self.run.owner
                )

    def _batch_done(self, shard: _Shard, _future: Future[None] | None = None) -> None:
        with self._lock:
            shard.open_batches -= 1
        self._release_shard(shard)

    def _drain_shard(self, name: str, pool: ThreadPoolExecutor) -> bool:
        """Page through one shard, handing batches to ``pool``. False if another run has it."""
        run, cfg = self.run, self.run.config
        if run.stop is not None:
            return True
        if not run.can_start_request():
            run.stop_run("deadline")
            return True
        if not self._lease_shard(name):
            return False
        shard = _Shard(name)
        with self._lock:
            self._shards_held[name] = shard
        start: dict[str, Any] | None = None
        try:
            first = True
            while run.stop is None:
                if not run.can_start_request():
                    run.stop_run("deadline")
                    break
                if not first and not self._lease_shard(name):
                    break  # the lease expired and another run took the shard over
                first = False
                page, start = self.outbox.pending_segments(name, limit=cfg.page_size, after=start)
                now_ms = run.now_ms()
                # The index copy may be stale; the claim decides. Skipping visibly leased
                # segments only saves a write that would fail.
                free = [s for s in page if s.lease_until < now_ms]
                for batch in packed(free, cfg.group_events):
                    # Keep a batch queued behind each worker, so the next page's query
                    # overlaps the claims, POSTs and marks of this one.
                    self._settle(2 * cfg.concurrency - 1)
                    if run.stop is not None:
                        break
                    with self._lock:
                        shard.open_batches += 1
                    future = pool.submit(self._process, batch)
                    future.add_done_callback(partial(self._batch_done, shard))
                    self._inflight.add(future)
                if start is None:
                    break
        finally:
            with self._lock:
                shard.paged = True
            self._release_shard(shard)
        return True

    def _process(self, group: list[Segment]) -> None:
        """Claim, send and mark one group of segments (a worker thread)."""
        run = self.run
        if run.stop is not None:
            return
        if not run.can_start_request():
            run.stop_run("deadline")
            return
        now_ms = run.now_ms()
        try:
            won = self.outbox.claim(
                [s.key for s in group], owner=run.owner, now_ms=now_ms, lease_ms=run.lease_ms()
            )
        except StorageUnavailable as exc:
            logger.warning("flush stopped: claim failed", extra={"error": exc.message})
            run.stop_run("storage")
            return
        claimed = [s for s in group if s.key in won]
        if not claimed:
            return
        # Never send past the lease (another run could take the segments over) nor past the
        # run's own margin (the marks must still fit). The budget starts at the claim.
        budget = run.send_budget_s()
        deadline = time.monotonic() + budget - max(0.0, run.now_ms() - now_ms) / 1000.0
        delivered: list[Delivery] = []
        try:
            for unit in packed(claimed, run.config.batch_size):
                delivery = Delivery(unit)
                self.deliverer.deliver(delivery.events, deadline, delivery)
                delivered.append(delivery)
        except (OpenMeterUnavailable, OpenMeterMisconfigured, StorageUnavailable) as exc:
            run.stopped_by(exc)
            done = {s.key for d in delivered for s in d.segments}
            self._release([s for s in claimed if s.key not in done], exc.message)
        self._mark(delivered)

    def _mark(self, delivered: list[Delivery]) -> None:
        """Mark the delivered segments sent (OpenMeter acknowledged every event in them)."""
        if not delivered:
            return
        owner = self.run.owner
        keys = [s.key for d in delivered for s in d.segments]
        try:
            marked = self.outbox.mark_sent(
                keys, owner=owner, sent_at=now_rfc3339(), now_s=int(self.run.clock())
            )
        except StorageUnavailable:
            marked = set()  # the answer was lost, not necessarily the writes: read them back
        if len(marked) < len(keys):
            marked |= self.outbox.marked_by([k for k in keys if k not in marked], owner=owner)
        sent = lost = 0
        for d in delivered:
            if all(s.key in marked for s in d.segments):
                sent += d.acked
            else:
                lost += len(d.events)
        if lost:
            # Only possible if this group outlived its lease: the new holder marks them.
            logger.warning("flush lost leases before marking", extra={"events": lost})
        self.run.add(sent=sent)

    def _release(self, held: list[Segment], error: str) -> None:
        # If DynamoDB refuses, the leases simply expire.
        if not held:
            return
        with contextlib.suppress(StorageUnavailable):
            self.outbox.release([s.key for s in held], owner=self.run.owner, error=error)
