"""Publish stored events and alerts to NATS, best effort (docs/usage.md)."""

from __future__ import annotations

import asyncio
import time

from meterbridge.bus.publisher import Message, get_publisher
from meterbridge.bus.subjects import nats_msg_id, tenant_subject
from meterbridge.dal.outbox.repository import DynamoOutbox
from meterbridge.errors import StorageUnavailable
from meterbridge.models.cloudevent import CloudEvent, now_rfc3339
from meterbridge.observability import logger, metrics
from meterbridge.settings import Settings, get_settings


async def publish(
    tenant_id: str,
    events: list[CloudEvent],
    alerts: list[CloudEvent],
    settings: Settings | None = None,
) -> None:
    """Publish stored events and alerts to the tenant's subject, best effort.

    What JetStream acknowledged costs no write; the rest is marked for the flush (the
    ``republish`` index), which republishes it with the same ``Nats-Msg-Id``.
    """

    settings = settings or get_settings()
    everything = events + alerts
    if not everything or not settings.nats_enabled:
        return
    messages = [
        Message(tenant_subject(tenant_id, "usage"), nats_msg_id(e.source, e.id), e.wire())
        for e in everything
    ]
    started = time.perf_counter()
    acked = await get_publisher().publish(messages)
    missed = [e for e in everything if nats_msg_id(e.source, e.id) not in acked]
    if missed:
        logger.warning("events left for republish", extra={"count": len(missed)})
        store = DynamoOutbox(settings.events_table)
        try:
            await asyncio.to_thread(store.mark_unpublished, missed, accepted_at=now_rfc3339())
        except StorageUnavailable as exc:
            # The live stream is best effort; the flush still republishes recent records
            # from the table's stream (docs/flush.md).
            logger.warning("republish markers not written", extra={"error": exc.message})
    metrics.add_metric(
        name="NatsPublishMs", unit="Milliseconds", value=(time.perf_counter() - started) * 1000
    )
