"""Dead letters: events OpenMeter rejected, listed and retried (admin API and CLI).

Kept apart from the flush so the admin API imports neither the OpenMeter client nor the flush.
The ids and cursors are opaque here: ``dal/outbox/deadletters.py`` makes and reads them.
"""

from __future__ import annotations

from meterbridge.bus.subjects import nats_msg_id
from meterbridge.dal.outbox import deadletters as deadletters_dal
from meterbridge.errors import Conflict, NotFound, ValidationFailed
from meterbridge.models.deadletter import (
    DeadLetter,
    DeadLetterPage,
    DeadLetterRetry,
    DeadLetterRetryResult,
)
from meterbridge.observability import logger
from meterbridge.settings import Settings, get_settings
from meterbridge.timestamps import rfc3339


def list_dead_letters(
    limit: int = 50, cursor: str | None = None, *, settings: Settings | None = None
) -> DeadLetterPage:
    settings = settings or get_settings()
    try:
        return deadletters_dal.page(settings.events_table, limit=limit, cursor=cursor)
    except deadletters_dal.BadCursor as exc:
        raise ValidationFailed("invalid cursor", details=[{"loc": ["query", "cursor"]}]) from exc


def retry_dead_letter(dead_id: str, *, settings: Settings | None = None) -> DeadLetter:
    """Put one dead letter back in the outbox; 404 if unknown, 409 if not dead any more."""
    settings = settings or get_settings()
    letter = deadletters_dal.find(settings.events_table, dead_id)
    if letter is None:
        raise NotFound("no such dead letter")
    if not deadletters_dal.retry(settings.events_table, dead_id, retried_at=rfc3339()):
        raise Conflict("the event is not dead-lettered (already retried or delivered)")
    logger.info(
        "dead letter retried",
        extra={"pk": nats_msg_id(letter.source, letter.event_id), "tenant": letter.tenant_id},
    )
    return letter


def retry_dead_letters(
    request: DeadLetterRetry, *, settings: Settings | None = None
) -> DeadLetterRetryResult:
    """Bulk retry: the given ids, or every dead letter (``limit`` per call, ``more`` if left)."""
    settings = settings or get_settings()
    table = settings.events_table
    more = False
    if request.all:
        ids, more = deadletters_dal.oldest_ids(table, limit=request.limit)
    else:
        ids = [c for c in map(deadletters_dal.canonical_id, request.ids) if c is not None]
    at = rfc3339()
    wanted = set(ids)
    retried: list[str] = []
    skipped = [i for i in request.ids if i not in wanted]
    for dead_id in ids:
        ok = deadletters_dal.retry(table, dead_id, retried_at=at)
        (retried if ok else skipped).append(dead_id)
    logger.info("dead letters retried", extra={"retried": len(retried), "skipped": len(skipped)})
    return DeadLetterRetryResult(retried=retried, skipped=skipped, more=more)
