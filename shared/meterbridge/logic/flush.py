"""The OpenMeter flush: drain the outbox exactly once, whatever fails (issue 5).

One run (EventBridge, every minute; runs may overlap):

1. Walk the shards from a random first one. Work a shard only while holding its shard lease
   (one conditional write, renewed per page, dropped when the shard is done), so overlapping
   runs drain different shards; a shard another run holds is tried once more at the end.
2. Read the ``outbox`` index in projected pages of *segments* (each carries the events one
   write accepted, up to 98); cut pages into claim groups of up to ``group_events`` events;
   ``concurrency`` workers each claim, send and mark one group while the producer reads on.
3. Per group: claim its segments with conditional updates grouped in one
   ``TransactWriteItems`` (pending and not leased by a live run; the losers are dropped), POST
   the claimed segments' events in batches of up to ``FLUSH_BATCH_SIZE``, then mark the
   segments sent the same way, conditioned on still holding the lease. Nothing is marked
   before OpenMeter acknowledged every event in it; a run killed between the POST and the mark
   leaves leased segments that come back when the lease expires, and are re-sent with the same
   ``(source, id)``s.
4. A 400 splits the batch in halves until the rejected event stands alone: its record is
   dead-lettered with OpenMeter's answer, every other event goes through.
5. OpenMeter down (retries exhausted, circuit open) or misconfigured: the segments already
   acknowledged are marked, the others released for the next run, and this run stops sending.
6. Republish to NATS what ingest could not publish; count what is left.

The run stops claiming when ``remaining_ms()`` leaves less than the safety margin plus one
request, and no batch (with its retries) may outlive its lease, so an event is only ever
re-sent after a crash, a lost acknowledgement or a timeout whose outcome OpenMeter never told.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from functools import partial
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field

from meterbridge.adapters.openmeter import (
    OpenMeterClient,
    OpenMeterMisconfigured,
    OpenMeterRejected,
    OpenMeterUnavailable,
    get_client,
)
from meterbridge.bus.subjects import nats_msg_id, tenant_subject
from meterbridge.dal import outbox
from meterbridge.dal.outbox import ledger, recovery, segments, shard_leases, stream
from meterbridge.dal.outbox.repository import DynamoOutbox
from meterbridge.errors import MeterbridgeError, StorageUnavailable
from meterbridge.models.cloudevent import now_rfc3339
from meterbridge.models.outbox import Segment
from meterbridge.observability import logger, metrics
from meterbridge.settings import Settings, get_settings

_T = TypeVar("_T")

StopReason = Literal["deadline", "openmeter_unavailable", "openmeter_misconfigured", "storage"]


class FlushConfig(BaseModel):
    """Tuning of one run. ``from_settings`` is what the Lambda uses; tests shorten the times."""

    batch_size: int = Field(100, ge=1, le=1000)
    lease_s: float = Field(90.0, gt=0)
    send_budget_s: float = Field(40.0, gt=0)
    safety_ms: int = Field(5000, ge=0)
    concurrency: int = Field(4, ge=1, le=64)
    db_workers: int = Field(8, ge=1, le=64)
    # Segments per page query (DynamoDB also stops a page at 1 MB).
    page_size: int = Field(50, ge=1, le=1000)
    # Events per claim group: one claim and one mark transaction per group, its segments
    # POSTed in batches of up to ``batch_size`` events.
    group_events: int = Field(400, ge=1, le=10_000)
    republish_limit: int = Field(2000, ge=0)
    shard_leases: bool = True
    # Records per GetRecords call (DynamoDB Streams returns at most 1,000 and 1 MB).
    stream_page: int = Field(1000, ge=1, le=1000)
    # Items per recovery Scan page (DynamoDB also stops a page at 1 MB).
    recovery_page: int = Field(1000, ge=1, le=10_000)

    @classmethod
    def from_settings(cls, settings: Settings) -> FlushConfig:
        # The lease covers the longest a batch may take: its send budget (every retry and
        # backoff of one batch) plus the marks; it expires well within two schedule ticks.
        budget = max(settings.openmeter_timeout_s * 3, 30.0)
        # FLUSH_CONCURRENCY is read when the settings model has it (docs/flush.md).
        concurrency = settings.flush_concurrency
        return cls(
            batch_size=settings.flush_batch_size,
            send_budget_s=budget,
            lease_s=budget * 2,
            concurrency=concurrency,
        )


class FlushResult(BaseModel):
    sent: int = 0
    retried: int = 0
    dead_lettered: int = 0
    remaining: int = 0
    duration_ms: int = 0
    republished: int = 0
    # OpenMeter ingest requests that failed (retried, refused, or given up on).
    failed_requests: int = 0
    # Events moved from the stream into backlog items while OpenMeter could not take them.
    parked: int = 0
    # Events read back from their records for a stream gap (delivered or parked), and the
    # gaps still open after the run (docs/flush.md#when-the-stream-trimmed-a-checkpoint).
    recovered: int = 0
    recovering: int = 0
    stopped: StopReason | None = None


class _Shard:
    """A shard this run leases: released once it is paged through and its batches are done."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.open_batches = 0
        self.paged = False
        self.released = False


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
        self.config = config or FlushConfig()
        self.remaining_ms = remaining_ms
        self.clock = clock
        self.send_enabled = send_enabled
        self.publisher = publisher
        self.lease_table = lease_table if self.config.shard_leases else None
        # Checkpoints, backlog and counters live in the idempotency table whatever the tuning.
        self.lease_ledger = lease_table
        self.outbox = DynamoOutbox(table, lease_table)
        # Set when a stream shard was left unread (another run's, or a stop): ``remaining``
        # then reads the stream's tail (streams read units, not table reads).
        self._stream_incomplete = False
        self.owner = f"flush-{uuid.uuid4().hex}"
        self.result = FlushResult()
        self._lock = threading.Lock()
        self._stop: StopReason | None = None
        self._db: ThreadPoolExecutor | None = None
        self._inflight: set[Future[None]] = set()
        self._shards_held: dict[str, _Shard] = {}

    # -- time ----------------------------------------------------------------------------

    def _left_s(self) -> float:
        """Seconds this run may still spend before its safety margin (inf without a deadline)."""
        if self.remaining_ms is None:
            return float("inf")
        return (self.remaining_ms() - self.config.safety_ms) / 1000.0

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _can_start_request(self) -> bool:
        return self._left_s() >= min(self.client.timeout_s, self.config.send_budget_s)

    def _stop_run(self, reason: StopReason) -> None:
        with self._lock:
            if self._stop is None:
                self._stop = reason

    def _add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self.result, name, getattr(self.result, name) + value)

    # -- DynamoDB fan-out ----------------------------------------------------------------

    def _db_map(self, fn: Callable[[_T], bool], items: Sequence[_T]) -> list[bool]:
        if self._db is None or len(items) == 1:
            return [fn(item) for item in items]
        return list(self._db.map(fn, items))

    # -- the run -------------------------------------------------------------------------

    def run(self) -> FlushResult:
        started = time.monotonic()
        with ThreadPoolExecutor(self.config.db_workers, thread_name_prefix="flush-db") as db:
            self._db = db
            try:
                if self.send_enabled:
                    self._drain()
                    self._drain_backlog()
                self._drain_stream()
                self._recover()
                if self._nats_on():
                    self._republish()
                self.result.remaining = self._remaining()
            except StorageUnavailable as exc:
                logger.warning("flush stopped: storage unavailable", extra={"error": exc.message})
                self._stop_run("storage")
            finally:
                self._db = None
        self.result.stopped = self._stop
        self.result.duration_ms = int((time.monotonic() - started) * 1000)
        return self.result

    def _shards(self) -> list[str]:
        first = random.randrange(segments.OUTBOX_SHARDS)
        return [str((first + i) % segments.OUTBOX_SHARDS) for i in range(segments.OUTBOX_SHARDS)]

    def _settle(self, below: int) -> None:
        """Wait until fewer than ``below + 1`` batches are queued or in flight."""
        while len(self._inflight) > below:
            done, pending = wait(self._inflight, return_when=FIRST_COMPLETED)
            self._inflight = set(pending)
            for future in done:
                future.result()  # a crash in a worker ends the run here, leases held

    def _drain(self) -> None:
        with ThreadPoolExecutor(self.config.concurrency, thread_name_prefix="flush-send") as pool:
            try:
                # The segment layout (before the stream): drained after an upgrade, then each
                # shard costs one empty one-item query a run (docs/flush.md#migration).
                busy = [s for s in self._shards() if self.outbox.any_pending(s)]
                deferred = [s for s in busy if not self._drain_shard(s, pool)]
                # Shards another run held a moment ago: it may have finished them since.
                for shard in deferred:
                    if self._stop is not None:
                        break
                    self._drain_shard(shard, pool)
            finally:
                try:
                    self._settle(0)
                finally:
                    for held in list(self._shards_held.values()):
                        self._release_shard(held, force=True)

    def _lease_shard(self, name: str) -> bool:
        if self.lease_table is None:
            return True
        return shard_leases.acquire_shard(
            self.lease_table,
            self.table,
            name,
            owner=self.owner,
            now_ms=self._now_ms(),
            lease_ms=int(self.config.lease_s * 1000),
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
                    self.lease_table, self.table, shard.name, owner=self.owner
                )

    def _batch_done(self, shard: _Shard, _future: Future[None] | None = None) -> None:
        with self._lock:
            shard.open_batches -= 1
        self._release_shard(shard)

    def _drain_shard(self, name: str, pool: ThreadPoolExecutor) -> bool:
        """Page through one shard, handing batches to ``pool``. False if another run has it."""
        cfg = self.config
        if self._stop is not None:
            return True
        if not self._can_start_request():
            self._stop_run("deadline")
            return True
        if not self._lease_shard(name):
            return False
        shard = _Shard(name)
        with self._lock:
            self._shards_held[name] = shard
        start: dict[str, Any] | None = None
        try:
            first = True
            while self._stop is None:
                if not self._can_start_request():
                    self._stop_run("deadline")
                    break
                if not first and not self._lease_shard(name):
                    break  # the lease expired and another run took the shard over
                first = False
                page, start = self.outbox.pending_segments(name, limit=cfg.page_size, after=start)
                now_ms = self._now_ms()
                # The index copy may be stale; the claim decides. Skipping visibly leased
                # segments only saves a write that would fail.
                free = [s for s in page if s.lease_until < now_ms]
                for batch in _packed(free, cfg.group_events):
                    # Keep a batch queued behind each worker, so the next page's query
                    # overlaps the claims, POSTs and marks of this one.
                    self._settle(2 * cfg.concurrency - 1)
                    if self._stop is not None:
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
        if self._stop is not None:
            return
        if not self._can_start_request():
            self._stop_run("deadline")
            return
        cfg = self.config
        now_ms = self._now_ms()
        lease_ms = int(cfg.lease_s * 1000)
        try:
            won = self.outbox.claim(
                [s.key for s in group],
                owner=self.owner,
                now_ms=now_ms,
                lease_ms=lease_ms,
            )
        except StorageUnavailable as exc:
            logger.warning("flush stopped: claim failed", extra={"error": exc.message})
            self._stop_run("storage")
            return
        claimed = [s for s in group if s.key in won]
        if not claimed:
            return
        # Never send past the lease (another run could take the segments over) nor past the
        # run's own margin (the marks must still fit). The budget starts at the claim.
        budget = min(cfg.send_budget_s, cfg.lease_s * 0.75, self._left_s())
        deadline = time.monotonic() + budget - max(0.0, self._now_ms() - now_ms) / 1000.0
        delivered: list[_Delivery] = []
        try:
            for unit in _packed(claimed, cfg.batch_size):
                delivery = _Delivery(unit)
                self._deliver(delivery.events, deadline, delivery)
                delivered.append(delivery)
        except (OpenMeterUnavailable, OpenMeterMisconfigured, StorageUnavailable) as exc:
            self._stopped_by(exc)
            done = {s.key for d in delivered for s in d.segments}
            self._release([s for s in claimed if s.key not in done], exc.message)
        self._mark(delivered)

    def _deliver(self, events: list[str], deadline: float, delivery: _Delivery) -> None:
        """Send ``events``; bisect on rejection, dead-lettering the event OpenMeter refuses."""
        try:
            attempts = self.client.send_batch(events, deadline=deadline)
        except OpenMeterRejected as exc:
            self._add(failed_requests=1)
            if len(events) > 1:
                mid = len(events) // 2
                self._deliver(events[:mid], deadline, delivery)
                self._deliver(events[mid:], deadline, delivery)
                return
            self._dead_letter(events[0], exc, delivery)
            return
        self._add(retried=attempts - 1, failed_requests=attempts - 1)
        delivery.acked += len(events)

    def _mark(self, delivered: list[_Delivery]) -> None:
        """Mark the delivered segments sent (OpenMeter acknowledged every event in them)."""
        if not delivered:
            return
        keys = [s.key for d in delivered for s in d.segments]
        try:
            marked = self.outbox.mark_sent(
                keys, owner=self.owner, sent_at=now_rfc3339(), now_s=int(self.clock())
            )
        except StorageUnavailable:
            marked = set()  # the answer was lost, not necessarily the writes: read them back
        if len(marked) < len(keys):
            marked |= self.outbox.marked_by([k for k in keys if k not in marked], owner=self.owner)
        sent = lost = 0
        for d in delivered:
            if all(s.key in marked for s in d.segments):
                sent += d.acked
            else:
                lost += len(d.events)
        if lost:
            # Only possible if this group outlived its lease: the new holder marks them.
            logger.warning("flush lost leases before marking", extra={"events": lost})
        self._add(sent=sent)

    def _dead_letter(self, event: str, exc: OpenMeterRejected, delivery: _Delivery) -> None:
        error = json.dumps(
            {"status": exc.http_status, "message": exc.message, "details": exc.details},
            default=str,
        )
        try:
            wire = json.loads(event)
            source, event_id = str(wire["source"]), str(wire["id"])
        except (ValueError, KeyError, TypeError):
            # Cannot happen for events ingest validated; never let it block the segment.
            logger.error("unreadable event in a segment", extra={"error": error})
            return
        pk = nats_msg_id(source, event_id)
        if self.outbox.dead_letter(source, event_id, error=error, dead_at=now_rfc3339()):
            self._add(dead_lettered=1)
            if self.lease_ledger is not None:
                with contextlib.suppress(StorageUnavailable):
                    ledger.add(self.lease_ledger, self.table, dead=1)
            logger.warning(
                "event dead-lettered",
                extra={"pk": pk, "tenant": delivery.tenant, "status": exc.http_status},
            )

    def _release(self, held: list[Segment], error: str) -> None:
        # If DynamoDB refuses, the leases simply expire.
        if not held:
            return
        with contextlib.suppress(StorageUnavailable):
            self.outbox.release([s.key for s in held], owner=self.owner, error=error)

    # -- the stream and the backlog (docs/flush.md) ----------------------------------------

    def _nats_on(self) -> bool:
        return self.publisher is not None and bool(getattr(self.publisher, "enabled", False))

    def _lease_ms(self) -> int:
        return int(self.config.lease_s * 1000)

    def _send(self, events: list[str], tenant: str | None) -> tuple[int, list[str]]:
        """POST ``events`` in batches of ``batch_size`` (bisecting on rejection, the rejected
        event dead-lettered), the batches concurrently. Returns how many OpenMeter
        acknowledged and the events of the batches it did not take (empty: all handled)."""
        cfg = self.config
        budget = min(cfg.send_budget_s, cfg.lease_s * 0.75, self._left_s())
        deadline = time.monotonic() + budget
        chunks = [events[i : i + cfg.batch_size] for i in range(0, len(events), cfg.batch_size)]
        holder = _Delivery([])
        holder.tenant = tenant

        def one(chunk: list[str]) -> Exception | None:
            if self._stop is not None:
                return _NotTried()
            try:
                self._deliver(chunk, deadline, holder)
            except (OpenMeterUnavailable, OpenMeterMisconfigured, StorageUnavailable) as exc:
                self._stopped_by(exc)
                return exc
            return None

        if len(chunks) == 1 or cfg.concurrency == 1:
            outcomes = [one(chunk) for chunk in chunks]
        else:
            with ThreadPoolExecutor(cfg.concurrency, thread_name_prefix="flush-send") as pool:
                outcomes = list(pool.map(one, chunks))
        failed = [e for chunk, error in zip(chunks, outcomes, strict=True) if error for e in chunk]
        return holder.acked, failed

    def _stopped_by(self, exc: Exception) -> None:
        reason: StopReason = (
            "openmeter_misconfigured"
            if isinstance(exc, OpenMeterMisconfigured)
            else "storage"
            if isinstance(exc, StorageUnavailable)
            else "openmeter_unavailable"
        )
        attempts = getattr(exc, "attempts", 1)
        self._add(retried=max(0, attempts - 1), failed_requests=attempts)
        log = logger.error if reason == "openmeter_misconfigured" else logger.warning
        error = getattr(exc, "message", None) or str(exc)
        log("flush batch not delivered", extra={"reason": reason, "error": error})
        self._stop_run(reason)

    def _drain_backlog(self) -> None:
        """Deliver parked events, oldest first, before the stream (OpenMeter is back)."""
        if self.lease_ledger is None:
            return
        while self._stop is None and self._can_start_request():
            items = self.outbox.parked(limit=4)
            progressed = False
            for item in items:
                if self._stop is not None or not self._can_start_request():
                    break
                if not self.outbox.lease_parked(
                    item,
                    owner=self.owner,
                    now_ms=self._now_ms(),
                    lease_ms=self._lease_ms(),
                ):
                    continue
                done, failed = self._send(list(item.events), None)
                if failed:
                    with contextlib.suppress(StorageUnavailable):
                        self.outbox.release_parked(item, owner=self.owner)
                    return
                if self.outbox.delivered(item, owner=self.owner):
                    self._add(sent=done)
                    progressed = True
            if not progressed:
                return

    def _drain_stream(self) -> None:
        """Read every stream shard from its checkpoint: send what it queued (or park it while
        OpenMeter cannot take it), then commit the checkpoint."""
        if self.lease_ledger is None:
            return
        arn = stream.stream_arn(self.table)
        if arn is None:
            logger.error("the events table has no stream: nothing reaches OpenMeter")
            return
        finished: set[str] = set()
        for _ in range(4):  # a parent finished in this run lets its children go next pass
            found = stream.shards(arn)
            done = stream.done_shards(self.lease_ledger, self.table, found)
            done.update(dict.fromkeys(finished, True))
            ready = [s for s in stream.in_lineage_order(found, done) if s.shard_id not in finished]
            if not ready:
                return
            for shard in ready:
                if self._stop in ("deadline", "storage") or not self._can_start_request():
                    self._stop_run("deadline")
                    self._stream_incomplete = True
                    return
                checkpoint = stream.acquire(
                    self.lease_ledger,
                    self.table,
                    shard.shard_id,
                    owner=self.owner,
                    now_ms=self._now_ms(),
                    lease_ms=self._lease_ms(),
                )
                if checkpoint is None:
                    finished.add(shard.shard_id)  # another run reads it
                    self._stream_incomplete = True
                    continue
                # Released when the read ends or fails; a run killed mid-read (a Lambda
                # timeout) keeps it until it expires, like its checkpoint.
                try:
                    if checkpoint.done or self._read_shard(
                        arn, shard, checkpoint, {s.shard_id for s in found}
                    ):
                        finished.add(shard.shard_id)
                except Exception:
                    stream.release(self.lease_ledger, self.table, shard.shard_id, owner=self.owner)
                    raise
                stream.release(self.lease_ledger, self.table, shard.shard_id, owner=self.owner)
            if not any(s.closed for s in found):
                return

    def _read_shard(
        self, arn: str, shard: stream.Shard, checkpoint: stream.Checkpoint, present: set[str]
    ) -> bool:
        """Read one shard from its checkpoint; True when it is done (closed and read to its
        end). A gap the stream trimmed gets a recovery window first."""
        assert self.lease_ledger is not None
        seq = checkpoint.seq
        if seq is None and shard.parent and shard.parent not in present:
            self._parent_gone(arn, shard)
        try:
            it = stream.iterator(arn, shard.shard_id, seq, strict=True)
        except stream.CheckpointTrimmed:
            self._open_recovery(arn, shard.shard_id, checkpoint.committed_at)
            if not stream.commit(
                self.lease_ledger,
                self.table,
                shard.shard_id,
                owner=self.owner,
                seq=None,
                reset=True,
                now_ms=self._now_ms(),
                lease_ms=self._lease_ms(),
            ):
                return False
            seq = None
            it = stream.iterator(arn, shard.shard_id, None)
        while it is not None:
            if self._stop in ("deadline", "storage") or not self._can_start_request():
                self._stop_run("deadline")
                self._stream_incomplete = True
                return False
            records, nxt = stream.read(it, limit=self.config.stream_page)
            if not records:
                if nxt is None:
                    stream.commit(
                        self.lease_ledger,
                        self.table,
                        shard.shard_id,
                        owner=self.owner,
                        seq=seq,
                        done=True,
                        now_ms=self._now_ms(),
                        lease_ms=self._lease_ms(),
                    )
                    return True
                return False  # caught up with an open shard
            queued = [q for r in records for q in stream.queued(r)]
            # A page the stream has held for half its retention is parked whatever OpenMeter
            # says: a flush that lags (not only one facing an outage) never lets the 24-hour
            # stream hold the only copy of an undelivered event.
            old = stream.age_s(records[0], now_s=self.clock()) >= PARK_AFTER_S
            acked = self._send_or_park(queued, park_only=old)
            if acked is None:
                self._stream_incomplete = True
                return False
            seq = stream.sequence(records[-1])
            if not stream.commit(
                self.lease_ledger,
                self.table,
                shard.shard_id,
                owner=self.owner,
                seq=seq,
                committed_at=max(
                    [q.accepted_at for q in queued if q.accepted_at]
                    or [stream.record_time(records[-1])]
                ),
                now_ms=self._now_ms(),
                lease_ms=self._lease_ms(),
            ):
                # Only if this run outlived its lease: the new holder re-sends from the old
                # checkpoint (OpenMeter dedupes) and counts them.
                logger.warning("stream shard lease lost", extra={"shard": shard.shard_id})
                return False
            self._add(sent=acked)
            requeued = sum(1 for q in queued if q.requeued)
            if requeued:
                with contextlib.suppress(StorageUnavailable):
                    ledger.add(self.lease_ledger, self.table, dead=-requeued)
            it = nxt
        return False

    # -- a stream gap: recovery from the event records (docs/flush.md) -----------------------

    def _parent_gone(self, arn: str, shard: stream.Shard) -> None:
        """The shard's parent left the stream: if its checkpoint was not at its end, the
        parent's tail was trimmed unread."""
        assert self.lease_ledger is not None and shard.parent is not None
        parent = stream.checkpoint(self.lease_ledger, self.table, shard.parent)
        if parent is None or parent.done:
            return
        self._open_recovery(arn, shard.shard_id, parent.committed_at, gone=shard.parent)
        stream.mark_trimmed(self.lease_ledger, self.table, shard.parent)

    def _open_recovery(
        self, arn: str, shard_id: str, committed_at: str | None, *, gone: str | None = None
    ) -> None:
        """Record the gap between the last committed record and the oldest one the stream
        still holds, durable before the checkpoint moves on."""
        assert self.lease_ledger is not None
        now = _rfc3339(self.clock())
        oldest = stream.oldest_time(arn, shard_id) or now
        margin = RECOVERY_MARGIN_S
        lo = _rfc3339(outbox.epoch_s(committed_at) - margin) if committed_at else ""
        hi = _rfc3339(outbox.epoch_s(oldest) + margin + 1)
        opened = recovery.open_window(
            self.lease_ledger, self.table, gone or shard_id, lo=lo, hi=hi, opened_at=now
        )
        logger.error(
            "stream checkpoint trimmed: recovering from the event records",
            extra={"shard": gone or shard_id, "from": lo, "to": hi, "new_window": opened},
        )

    def _recover(self) -> None:
        """Fill every open gap: Scan the event records accepted in it, page by page from its
        progress checkpoint, and deliver (or park) them; the window closes when the Scan ends."""
        if self.lease_ledger is None:
            return
        open_windows = recovery.windows(self.lease_ledger, self.table)
        self.result.recovering = len(open_windows)
        for window in open_windows:
            if self._stop in ("deadline", "storage") or not self._can_start_request():
                return
            if not recovery.lease(
                self.lease_ledger,
                window,
                owner=self.owner,
                now_ms=self._now_ms(),
                lease_ms=self._lease_ms(),
            ):
                continue  # another run fills it
            try:
                if self._fill(window):
                    self.result.recovering -= 1
            finally:
                with contextlib.suppress(StorageUnavailable):
                    recovery.release(self.lease_ledger, window, owner=self.owner)

    def _fill(self, window: recovery.Window) -> bool:
        """Scan one window from its cursor; True once it is filled and closed."""
        assert self.lease_ledger is not None
        cursor = window.cursor
        while True:
            if self._stop in ("deadline", "storage") or not self._can_start_request():
                self._stop_run("deadline")
                return False
            found, nxt, scanned = recovery.scan_page(
                self.table, window, cursor, limit=self.config.recovery_page
            )
            acked = self._send_or_park(found)
            if acked is None:
                return False
            self._add(sent=acked, recovered=len(found))
            if nxt is None:
                if recovery.close(self.lease_ledger, window, owner=self.owner):
                    logger.info(
                        "stream gap recovered",
                        extra={"shard": window.shard, "events": window.recovered + len(found)},
                    )
                    return True
                return False
            if not recovery.advance(
                self.lease_ledger,
                window,
                cursor=nxt,
                scanned=scanned,
                recovered=len(found),
                owner=self.owner,
                now_ms=self._now_ms(),
                lease_ms=self._lease_ms(),
            ):
                return False
            cursor = nxt

    def _send_or_park(self, queued: list[stream.Queued], *, park_only: bool = False) -> int | None:
        """Deliver one page of queued events, or park what OpenMeter did not take. Returns how
        many OpenMeter acknowledged once every event is delivered or parked (the checkpoint
        may move past them), None otherwise."""
        assert self.lease_ledger is not None
        if not queued:
            return 0
        self._republish_recent(queued)
        left, acked = queued, 0
        if self.send_enabled and self._stop is None and not park_only:
            acked, failed = self._send([q.event for q in queued], queued[0].tenant_id)
            if not failed:
                return acked
            unsent = set(failed)
            left = [q for q in queued if q.event in unsent]
        if self._stop in ("deadline", "storage"):
            return None
        try:
            parked = self.outbox.park([(q.accepted_at, q.event) for q in left])
        except MeterbridgeError as exc:
            logger.warning("backlog park failed", extra={"error": exc.message})
            self._stop_run("storage")
            return None
        self._add(parked=parked)
        return acked

    def _republish_recent(self, queued: list[stream.Queued]) -> None:
        """Publish recent stream records to NATS again, with the ``Nats-Msg-Id`` ingest used:
        inside JetStream's duplicate window a repeat is dropped, so this only fills in what an
        ingest that died between its commit and its publish never sent. Older records are left
        (ingest published them, or marked them for ``_republish``)."""
        if not self._nats_on():
            return
        from meterbridge.bus.publisher import Message
        from meterbridge.bus.subjects import DUPLICATE_WINDOW_S

        horizon = self.clock() - DUPLICATE_WINDOW_S + _REPUBLISH_MARGIN_S
        messages = []
        for q in queued:
            if q.requeued or not q.accepted_at or outbox.epoch_s(q.accepted_at) < horizon:
                continue
            try:
                subject = tenant_subject(str(q.tenant_id), str(q.kind))
            except ValueError:
                continue
            event = json.loads(q.event)
            msg_id = nats_msg_id(event["source"], event["id"])
            messages.append(Message(subject=subject, msg_id=msg_id, payload=event))
        if messages:
            with contextlib.suppress(Exception):
                self.publisher.publish_sync(messages)

    def _remaining(self) -> int:
        """Events waiting: the ledger's backlog, the stream's tail when this run left some of
        it unread, and the segment layout's pending segments while any are left. No index is
        counted whole."""
        left = 0
        if self.lease_ledger is not None and self._stream_incomplete:
            left += stream.unread(self.lease_ledger, self.table)[0]
        if self.lease_ledger is not None:
            counts = ledger.read(self.lease_ledger, self.table)
            left += counts["backlog"]
            if not counts["dead_seeded"]:
                # Once, after an upgrade: the dead letters the segment layout left.
                ledger.seed_dead(
                    self.lease_ledger,
                    self.table,
                    self.outbox.count_dead_letters(),
                )
        busy = [s for s in self._shards() if self.outbox.any_pending(s)]
        if busy:
            left += self.outbox.count_pending()
        return left

    # -- NATS ----------------------------------------------------------------------------

    def _republish(self) -> None:
        from meterbridge.bus.publisher import Message

        budget = self.config.republish_limit
        for shard in self._shards():
            start: dict[str, Any] | None = None
            while budget > 0 and self._left_s() > 1.0:
                page, start = self.outbox.unpublished(shard, limit=min(100, budget), after=start)
                budget -= len(page)
                messages, by_id, unroutable = [], {}, []
                for item in page:
                    key = (item.source, item.event_id)
                    try:
                        subject = tenant_subject(str(item.tenant_id), str(item.kind))
                    except ValueError:
                        unroutable.append(key)
                        continue
                    msg_id = nats_msg_id(*key)
                    by_id[msg_id] = key
                    messages.append(Message(subject=subject, msg_id=msg_id, payload=item.payload))
                acked = self.publisher.publish_sync(messages) if messages else set()
                done = [by_id[m] for m in acked if m in by_id]
                if unroutable:
                    # No tenant subject exists for them; the live stream is best effort.
                    logger.warning(
                        "events without a tenant subject", extra={"events": len(unroutable)}
                    )
                self._db_map(lambda k: self.outbox.mark_published(*k), done + unroutable)
                self._add(republished=len(done))
                if len(acked) < len(messages):
                    return  # NATS is unhealthy; the rest waits for the next run
                if start is None:
                    break


_REPUBLISH_MARGIN_S = 60
# A recovery window reaches this far past both ends: an event's ``accepted_at`` is stamped
# before its transaction commits (and on the Lambda's clock), so its stream position can be a
# little out of step with it. A margin costs only re-sends, which OpenMeter drops.
RECOVERY_MARGIN_S = 600


def _rfc3339(epoch_s: float) -> str:
    from datetime import UTC, datetime

    at = datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")
    return at.replace("+00:00", "Z")


# Half the stream's 24-hour retention (docs/flush.md).
PARK_AFTER_S = 12 * 3600


class _NotTried(Exception):
    """A batch not sent because the run had stopped sending."""


class _Delivery:
    """Segments POSTed together, and how many of their events OpenMeter acknowledged."""

    def __init__(self, held: list[Segment]) -> None:
        self.segments = held
        self.events = [e for s in held for e in s.events]
        self.tenant = held[0].tenant_id if held else None
        self.acked = 0


def _packed(segments: list[Segment], events: int) -> Iterable[list[Segment]]:
    """Consecutive segments packed into runs of up to ``events`` events: the claim groups of a
    page, and the POSTs of a group. A segment is never split (it holds at most 98 events and
    300 KB), so a larger one stands alone."""
    run: list[Segment] = []
    size = 0
    for segment in segments:
        count = segment.count
        if run and size + count > events:
            yield run
            run, size = [], 0
        run.append(segment)
        size += count
    if run:
        yield run


def flush_outbox(
    remaining_ms: Callable[[], int] | None = None,
    *,
    settings: Settings | None = None,
    config: FlushConfig | None = None,
    client: OpenMeterClient | None = None,
    publisher: Any = None,
    clock: Callable[[], float] = time.time,
) -> FlushResult:
    """Run one flush; log the result and emit it as metrics."""
    from aws_lambda_powertools.metrics import MetricUnit

    settings = settings or get_settings()
    if publisher is None:
        from meterbridge.bus.publisher import get_publisher

        publisher = get_publisher()
    flusher = Flusher(
        table=settings.events_table,
        lease_table=settings.idempotency_table,
        client=client or get_client(settings),
        config=config or FlushConfig.from_settings(settings),
        remaining_ms=remaining_ms,
        clock=clock,
        send_enabled=settings.openmeter_enabled,
        publisher=publisher,
    )
    result = flusher.run()
    logger.info(
        "flush finished",
        extra={**result.model_dump(), "openmeter_enabled": settings.openmeter_enabled},
    )
    metrics.add_metric(name="OpenMeterEventsSent", unit=MetricUnit.Count, value=result.sent)
    metrics.add_metric(name="OpenMeterFlushRetried", unit=MetricUnit.Count, value=result.retried)
    metrics.add_metric(
        name="OpenMeterFlushDeadLettered", unit=MetricUnit.Count, value=result.dead_lettered
    )
    metrics.add_metric(name="OutboxRemaining", unit=MetricUnit.Count, value=result.remaining)
    metrics.add_metric(name="OutboxRecovered", unit=MetricUnit.Count, value=result.recovered)
    metrics.add_metric(name="OutboxRecoveryWindows", unit=MetricUnit.Count, value=result.recovering)
    metrics.add_metric(
        name="OpenMeterFlushDuration", unit=MetricUnit.Milliseconds, value=result.duration_ms
    )
    metrics.add_metric(
        name="OpenMeterCircuitState", unit=MetricUnit.Count, value=int(flusher.client.breaker.state)
    )
    _record_for_operators(result, int(flusher.client.breaker.state), settings)
    return result


def _record_for_operators(result: FlushResult, breaker: int, settings: Settings) -> None:
    """The last result for ``meterbridge status`` and the backlog gauges the alarms watch.

    Bookkeeping only: a failure here is logged and never fails the run it describes.
    """
    from aws_lambda_powertools.metrics import MetricUnit

    from meterbridge.logic.status import outbox_gauges, record_flush

    try:
        record_flush(result, openmeter_breaker=breaker, settings=settings)
        gauges = outbox_gauges(settings)
    except MeterbridgeError as exc:
        logger.warning("flush bookkeeping failed", extra={"error": exc.code})
        return
    metrics.add_metric(
        name="OutboxOldestAgeSeconds", unit=MetricUnit.Seconds, value=gauges.oldest_pending_age_s
    )
    metrics.add_metric(name="DeadLetters", unit=MetricUnit.Count, value=gauges.dead_letters)


def run(remaining_ms: Callable[[], int] | None = None) -> dict[str, Any]:
    """The Lambda's entry: ``{sent, retried, dead_lettered, remaining, duration_ms, ...}``."""
    return flush_outbox(remaining_ms).model_dump()
