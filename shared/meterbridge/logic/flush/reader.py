"""Read the outbox's queue: the backlog first, then the events table's stream, shard by shard
from its checkpoint (docs/flush.md, steps 2 to 4).

A page is sent, or parked in backlog items while OpenMeter cannot take it; its checkpoint
moves only then. A checkpoint the stream trimmed opens a recovery window (``recovery``).
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

from meterbridge.dal.outbox import epoch_s, recovery, stream
from meterbridge.dal.outbox.repository import DynamoOutbox
from meterbridge.errors import MeterbridgeError, StorageUnavailable
from meterbridge.logic.flush.config import PARK_AFTER_S, RECOVERY_MARGIN_S, Run
from meterbridge.logic.flush.delivery import Deliverer
from meterbridge.logic.flush.republish import Republisher
from meterbridge.observability import logger


def rfc3339_of(epoch: float) -> str:
    at = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
    return at.replace("+00:00", "Z")


class StreamReader:
    def __init__(
        self,
        run: Run,
        outbox: DynamoOutbox,
        deliverer: Deliverer,
        republisher: Republisher,
        *,
        table: str,
        lease_table: str,
        send_enabled: bool,
    ) -> None:
        self.run = run
        self.outbox = outbox
        self.deliverer = deliverer
        self.republisher = republisher
        self.table = table
        self.lease_table = lease_table
        self.send_enabled = send_enabled
        # Set when a stream shard was left unread (another run's, or a stop): the run's
        # ``remaining`` then reads the stream's tail (streams read units, not table reads).
        self.incomplete = False

    def _out_of_time(self) -> bool:
        return self.run.stopped_hard() or not self.run.can_start_request()

    def send_or_park(self, queued: list[stream.Queued], *, park_only: bool = False) -> int | None:
        """Deliver one page of queued events, or park what OpenMeter did not take. Returns how
        many OpenMeter acknowledged once every event is delivered or parked (the checkpoint
        may move past them), None otherwise."""
        if not queued:
            return 0
        self.republisher.recent(queued)
        left, acked = queued, 0
        if self.send_enabled and self.run.stop is None and not park_only:
            acked, failed = self.deliverer.send([q.event for q in queued], queued[0].tenant_id)
            if not failed:
                return acked
            unsent = set(failed)
            left = [q for q in queued if q.event in unsent]
        if self.run.stopped_hard():
            return None
        try:
            parked = self.outbox.park([(q.accepted_at, q.event) for q in left])
        except MeterbridgeError as exc:
            logger.warning("backlog park failed", extra={"error": exc.message})
            self.run.stop_run("storage")
            return None
        self.run.add(parked=parked)
        return acked

    def drain_backlog(self) -> None:
        """Deliver parked events, oldest first, before the stream (OpenMeter is back)."""
        run = self.run
        while run.stop is None and run.can_start_request():
            items = self.outbox.parked(limit=4)
            progressed = False
            for item in items:
                if run.stop is not None or not run.can_start_request():
                    break
                if not self.outbox.lease_parked(
                    item, owner=run.owner, now_ms=run.now_ms(), lease_ms=run.lease_ms()
                ):
                    continue
                done, failed = self.deliverer.send(list(item.events), None)
                if failed:
                    with contextlib.suppress(StorageUnavailable):
                        self.outbox.release_parked(item, owner=run.owner)
                    return
                if self.outbox.delivered(item, owner=run.owner):
                    run.add(sent=done)
                    progressed = True
            if not progressed:
                return

    def drain_stream(self) -> None:
        """Read every stream shard from its checkpoint: send what it queued (or park it while
        OpenMeter cannot take it), then commit the checkpoint."""
        run = self.run
        arn = stream.stream_arn(self.table)
        if arn is None:
            logger.error("the events table has no stream: nothing reaches OpenMeter")
            return
        finished: set[str] = set()
        for _ in range(4):  # a parent finished in this run lets its children go next pass
            found = stream.shards(arn)
            done = stream.done_shards(self.lease_table, self.table, found)
            done.update(dict.fromkeys(finished, True))
            ready = [s for s in stream.in_lineage_order(found, done) if s.shard_id not in finished]
            if not ready:
                return
            for shard in ready:
                if self._out_of_time():
                    run.stop_run("deadline")
                    self.incomplete = True
                    return
                checkpoint = stream.acquire(
                    self.lease_table,
                    self.table,
                    shard.shard_id,
                    owner=run.owner,
                    now_ms=run.now_ms(),
                    lease_ms=run.lease_ms(),
                )
                if checkpoint is None:
                    finished.add(shard.shard_id)  # another run reads it
                    self.incomplete = True
                    continue
                # Released when the read ends or fails; a run killed mid-read (a Lambda
                # timeout) keeps it until it expires, like its checkpoint.
                try:
                    if checkpoint.done or self._read_shard(
                        arn, shard, checkpoint, {s.shard_id for s in found}
                    ):
                        finished.add(shard.shard_id)
                except Exception:
                    stream.release(self.lease_table, self.table, shard.shard_id, owner=run.owner)
                    raise
                stream.release(self.lease_table, self.table, shard.shard_id, owner=run.owner)
            if not any(s.closed for s in found):
                return

    def _commit(
        self,
        shard_id: str,
        seq: str | None,
        *,
        done: bool = False,
        committed_at: str | None = None,
        reset: bool = False,
    ) -> bool:
        # ``stream.commit`` looked up when called: the money-path model kills a run there.
        return stream.commit(
            self.lease_table,
            self.table,
            shard_id,
            owner=self.run.owner,
            seq=seq,
            done=done,
            committed_at=committed_at,
            reset=reset,
            now_ms=self.run.now_ms(),
            lease_ms=self.run.lease_ms(),
        )

    def _read_shard(
        self, arn: str, shard: stream.Shard, checkpoint: stream.Checkpoint, present: set[str]
    ) -> bool:
        """Read one shard from its checkpoint; True when it is done (closed and read to its
        end). A gap the stream trimmed gets a recovery window first."""
        run = self.run
        seq = checkpoint.seq
        if seq is None and shard.parent and shard.parent not in present:
            self._parent_gone(arn, shard)
        try:
            it = stream.iterator(arn, shard.shard_id, seq, strict=True)
        except stream.CheckpointTrimmed:
            self._open_recovery(arn, shard.shard_id, checkpoint.committed_at)
            if not self._commit(shard.shard_id, None, reset=True):
                return False
            seq = None
            it = stream.iterator(arn, shard.shard_id, None)
        while it is not None:
            if self._out_of_time():
                run.stop_run("deadline")
                self.incomplete = True
                return False
            records, nxt = stream.read(it, limit=run.config.stream_page)
            if not records:
                if nxt is None:
                    self._commit(shard.shard_id, seq, done=True)
                    return True
                return False  # caught up with an open shard
            queued = [q for r in records for q in stream.queued(r)]
            # A page the stream has held for half its retention is parked whatever OpenMeter
            # says: a flush that lags (not only one facing an outage) never lets the 24-hour
            # stream hold the only copy of an undelivered event.
            old = stream.age_s(records[0], now_s=run.clock()) >= PARK_AFTER_S
            acked = self.send_or_park(queued, park_only=old)
            if acked is None:
                self.incomplete = True
                return False
            seq = stream.sequence(records[-1])
            committed_at = max(
                [q.accepted_at for q in queued if q.accepted_at]
                or [stream.record_time(records[-1])]
            )
            if not self._commit(shard.shard_id, seq, committed_at=committed_at):
                # Only if this run outlived its lease: the new holder re-sends from the old
                # checkpoint (OpenMeter dedupes) and counts them.
                logger.warning("stream shard lease lost", extra={"shard": shard.shard_id})
                return False
            run.add(sent=acked)
            requeued = sum(1 for q in queued if q.requeued)
            if requeued:
                with contextlib.suppress(StorageUnavailable):
                    self.outbox.count_dead(-requeued)
            it = nxt
        return False

    # -- a stream gap: recorded here, filled by ``recovery`` --------------------------------

    def _parent_gone(self, arn: str, shard: stream.Shard) -> None:
        """The shard's parent left the stream: if its checkpoint was not at its end, the
        parent's tail was trimmed unread."""
        assert shard.parent is not None
        parent = stream.checkpoint(self.lease_table, self.table, shard.parent)
        if parent is None or parent.done:
            return
        self._open_recovery(arn, shard.shard_id, parent.committed_at, gone=shard.parent)
        stream.mark_trimmed(self.lease_table, self.table, shard.parent)

    def _open_recovery(
        self, arn: str, shard_id: str, committed_at: str | None, *, gone: str | None = None
    ) -> None:
        """Record the gap between the last committed record and the oldest one the stream
        still holds, durable before the checkpoint moves on."""
        now = rfc3339_of(self.run.clock())
        oldest = stream.oldest_time(arn, shard_id) or now
        margin = RECOVERY_MARGIN_S
        lo = rfc3339_of(epoch_s(committed_at) - margin) if committed_at else ""
        hi = rfc3339_of(epoch_s(oldest) + margin + 1)
        opened = recovery.open_window(
            self.lease_table, self.table, gone or shard_id, lo=lo, hi=hi, opened_at=now
        )
        logger.error(
            "stream checkpoint trimmed: recovering from the event records",
            extra={"shard": gone or shard_id, "from": lo, "to": hi, "new_window": opened},
        )
