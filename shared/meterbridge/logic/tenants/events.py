"""The tenant lifecycle's CloudEvents, and their best-effort publication to NATS.

An event is written to the outbox in the same transaction as the state change it announces
(the repositories do that); ``publish`` only sends it live, and marks what NATS missed for the
flush to republish.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from meterbridge.bus.publisher import Message, get_publisher
from meterbridge.bus.subjects import tenant_subject
from meterbridge.dal import outbox
from meterbridge.models.cloudevent import ADMIN_SOURCE, CloudEvent, now_rfc3339, stable_id
from meterbridge.observability import logger
from meterbridge.settings import Settings, get_settings


def lifecycle_event(
    event_type: str, tenant_id: str, version: int, data: dict[str, Any]
) -> CloudEvent:
    """The event announcing the tenant's move to profile ``version``.

    The id is stable per (type, tenant, version): a re-emission after a crash is the same event.
    """
    return CloudEvent(
        id=stable_id(event_type, tenant_id, str(version)),
        source=ADMIN_SOURCE,
        type=event_type,
        subject=tenant_id,
        data={"tenant_id": tenant_id, **data},
    )


async def publish(events: Sequence[CloudEvent], settings: Settings | None = None) -> None:
    """Send lifecycle events to the tenant's NATS subject; mark the ones NATS missed.

    Never raises: the outbox holds the events and the flush republishes what NATS missed.
    """
    if not events:
        return
    settings = settings or get_settings()
    publisher = get_publisher()
    if not publisher.enabled:
        return
    messages = [Message(tenant_subject(str(e.subject), "tenant"), e.id, e.wire()) for e in events]
    acked = await publisher.publish(messages)
    missed = [outbox.event_pk(e.source, e.id) for e in events if e.id not in acked]
    if missed:
        try:
            await asyncio.to_thread(
                outbox.mark_pending, settings.events_table, missed, accepted_at=now_rfc3339()
            )
        except Exception as exc:  # noqa: BLE001 - the live stream is best effort
            logger.warning("republish mark failed", extra={"error": type(exc).__name__})
