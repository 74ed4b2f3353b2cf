"""Deliver events to OpenMeter: POST in batches, bisect a refused batch, dead-letter the one
event OpenMeter refuses (docs/flush.md, step 5)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from meterbridge.adapters.openmeter import (
    OpenMeterClient,
    OpenMeterMisconfigured,
    OpenMeterRejected,
    OpenMeterUnavailable,
)
from meterbridge.bus.subjects import nats_msg_id
from meterbridge.dal.outbox.repository import DeadLetters
from meterbridge.errors import StorageUnavailable
from meterbridge.logic.flush.config import Run
from meterbridge.models.cloudevent import now_rfc3339
from meterbridge.models.outbox import Segment
from meterbridge.observability import logger


class NotTried(Exception):
    """A batch not sent because the run had stopped sending."""


class Delivery:
    """Segments POSTed together (none for the stream and the backlog), and how many of their
    events OpenMeter acknowledged."""

    def __init__(self, held: list[Segment], *, tenant: str | None = None) -> None:
        self.segments = held
        self.events = [e for s in held for e in s.events]
        self.tenant = held[0].tenant_id if held else tenant
        self.acked = 0


def packed(segments: list[Segment], events: int) -> Iterable[list[Segment]]:
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


class Deliverer:
    """POSTs for one run: every retry within the deadline it is given, the rejected event
    isolated by halves and dead-lettered, every other event sent."""

    def __init__(self, run: Run, client: OpenMeterClient, outbox: DeadLetters) -> None:
        self.run = run
        self.client = client
        self.outbox = outbox

    def deliver(self, events: list[str], deadline: float, delivery: Delivery) -> None:
        """Send ``events``; bisect on rejection, dead-lettering the event OpenMeter refuses."""
        try:
            attempts = self.client.send_batch(events, deadline=deadline)
        except OpenMeterRejected as exc:
            self.run.add(failed_requests=1)
            if len(events) > 1:
                mid = len(events) // 2
                self.deliver(events[:mid], deadline, delivery)
                self.deliver(events[mid:], deadline, delivery)
                return
            self.dead_letter(events[0], exc, delivery)
            return
        self.run.add(retried=attempts - 1, failed_requests=attempts - 1)
        delivery.acked += len(events)

    def dead_letter(self, event: str, exc: OpenMeterRejected, delivery: Delivery) -> None:
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
        if self.outbox.dead_letter(source, event_id, error=error, dead_at=now_rfc3339()):
            self.run.add(dead_lettered=1)
            with contextlib.suppress(StorageUnavailable):
                self.outbox.count_dead(1)
            logger.warning(
                "event dead-lettered",
                extra={
                    "pk": nats_msg_id(source, event_id),
                    "tenant": delivery.tenant,
                    "status": exc.http_status,
                },
            )

    def send(self, events: list[str], tenant: str | None) -> tuple[int, list[str]]:
        """POST ``events`` in batches of ``batch_size`` (bisecting on rejection, the rejected
        event dead-lettered), the batches concurrently. Returns how many OpenMeter
        acknowledged and the events of the batches it did not take (empty: all handled)."""
        cfg = self.run.config
        deadline = time.monotonic() + self.run.send_budget_s()
        chunks = [events[i : i + cfg.batch_size] for i in range(0, len(events), cfg.batch_size)]
        holder = Delivery([], tenant=tenant)

        def one(chunk: list[str]) -> Exception | None:
            if self.run.stop is not None:
                return NotTried()
            try:
                self.deliver(chunk, deadline, holder)
            except (OpenMeterUnavailable, OpenMeterMisconfigured, StorageUnavailable) as exc:
                self.run.stopped_by(exc)
                return exc
            return None

        if len(chunks) == 1 or cfg.concurrency == 1:
            outcomes = [one(chunk) for chunk in chunks]
        else:
            with ThreadPoolExecutor(cfg.concurrency, thread_name_prefix="flush-send") as pool:
                outcomes = list(pool.map(one, chunks))
        failed = [e for chunk, error in zip(chunks, outcomes, strict=True) if error for e in chunk]
        return holder.acked, failed
