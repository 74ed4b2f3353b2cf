"""Republish to NATS what ingest could not publish (docs/flush.md, step 6).

Its own object, not a method of the run: the stream reader republishes the recent records it
reads, and the run republishes the ``republish`` index at its end; both go through here.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from meterbridge.bus.publisher import Message
from meterbridge.bus.subjects import DUPLICATE_WINDOW_S, nats_msg_id, tenant_subject
from meterbridge.dal.outbox import epoch_s, stream
from meterbridge.dal.outbox.repository import DynamoOutbox
from meterbridge.logic.flush.config import REPUBLISH_MARGIN_S, Run, shard_order
from meterbridge.observability import logger


class Republisher:
    def __init__(self, run: Run, outbox: DynamoOutbox, publisher: Any) -> None:
        self.run = run
        self.outbox = outbox
        self.publisher = publisher

    def enabled(self) -> bool:
        return self.publisher is not None and bool(getattr(self.publisher, "enabled", False))

    def recent(self, queued: list[stream.Queued]) -> None:
        """Publish recent stream records to NATS again, with the ``Nats-Msg-Id`` ingest used:
        inside JetStream's duplicate window a repeat is dropped, so this only fills in what an
        ingest that died between its commit and its publish never sent. Older records are left
        (ingest published them, or marked them for ``marked``)."""
        if not self.enabled():
            return

        horizon = self.run.clock() - DUPLICATE_WINDOW_S + REPUBLISH_MARGIN_S
        messages = []
        for q in queued:
            if q.requeued or not q.accepted_at or epoch_s(q.accepted_at) < horizon:
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

    def marked(self) -> None:
        """Republish the events marked after a failed publish (the ``republish`` index), and
        remove each marker NATS acknowledged."""

        budget = self.run.config.republish_limit
        for shard in shard_order():
            start: dict[str, Any] | None = None
            while budget > 0 and self.run.left_s() > 1.0:
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
                self.run.db_map(lambda k: self.outbox.mark_published(*k), done + unroutable)
                self.run.add(republished=len(done))
                if len(acked) < len(messages):
                    return  # NATS is unhealthy; the rest waits for the next run
                if start is None:
                    break
