"""Dead letters: events OpenMeter rejected, listed and retried (admin API and CLI).

Kept apart from the flush so the admin API imports neither the OpenMeter client nor the flush.
"""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

from pydantic import BaseModel, Field

from meterbridge.dal import outbox
from meterbridge.errors import MeterbridgeError
from meterbridge.observability import logger
from meterbridge.settings import Settings, get_settings
from meterbridge.timestamps import rfc3339


class DeadLetter(BaseModel):
    """An event OpenMeter rejected. ``id`` is opaque (URL-safe) and names it in the API."""

    id: str
    source: str
    event_id: str
    tenant_id: str | None = None
    kind: str | None = None
    type: str | None = None
    error: Any = None
    dead_at: str | None = None
    attempts: int = 0
    event: dict[str, Any]


class DeadLetterPage(BaseModel):
    items: list[DeadLetter]
    next_cursor: str | None = None


class DeadLetterRetry(BaseModel):
    """``ids`` to put back in the outbox, or ``all`` (up to ``limit`` per call)."""

    ids: list[str] = Field(default_factory=list, max_length=1000)
    all: bool = False
    limit: int = Field(1000, ge=1, le=1000)


class DeadLetterRetryResult(BaseModel):
    retried: list[str]
    skipped: list[str] = Field(default_factory=list)
    more: bool = False


def _b64(raw: bytes) -> str:

    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def dead_letter_id(pk: str) -> str:
    return _b64(pk.encode())


def _pk_of(dead_id: str) -> str:
    from meterbridge.errors import NotFound

    try:
        pk = _unb64(dead_id).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise NotFound("no such dead letter") from exc
    if "#" not in pk:
        raise NotFound("no such dead letter")
    return pk


def _dead_letter(item: dict[str, Any]) -> DeadLetter:
    event = json.loads(item["event"])
    error: Any = item.get("error")
    if isinstance(error, str):
        with contextlib.suppress(ValueError):
            error = json.loads(error)
    return DeadLetter(
        id=dead_letter_id(item["pk"]),
        source=event["source"],
        event_id=event["id"],
        tenant_id=item.get("tenant_id"),
        kind=item.get("kind"),
        type=item.get("event_type"),
        error=error,
        dead_at=item.get("dead_at"),
        attempts=int(item.get("attempts", 0)),
        event=event,
    )


def list_dead_letters(
    limit: int = 50, cursor: str | None = None, *, settings: Settings | None = None
) -> DeadLetterPage:
    from meterbridge.errors import ValidationFailed

    settings = settings or get_settings()
    start = None
    if cursor:
        try:
            start = json.loads(_unb64(cursor))
            if not isinstance(start, dict):
                raise ValueError
        except ValueError as exc:
            raise ValidationFailed(
                "invalid cursor", details=[{"loc": ["query", "cursor"]}]
            ) from exc
    items, last = outbox.list_dead_letters(settings.events_table, limit=limit, start_key=start)
    next_cursor = _b64(json.dumps(last, separators=(",", ":")).encode()) if last else None
    return DeadLetterPage(items=[_dead_letter(i) for i in items], next_cursor=next_cursor)


def retry_dead_letter(dead_id: str, *, settings: Settings | None = None) -> DeadLetter:
    """Put one dead letter back in the outbox; 404 if unknown, 409 if not dead any more."""
    from meterbridge.errors import Conflict, NotFound

    settings = settings or get_settings()
    pk = _pk_of(dead_id)
    item = outbox.get_event(settings.events_table, pk)
    if item is None:
        raise NotFound("no such dead letter")
    if not outbox.retry_dead_letter(settings.events_table, pk, retried_at=rfc3339()):
        raise Conflict("the event is not dead-lettered (already retried or delivered)")
    logger.info("dead letter retried", extra={"pk": pk, "tenant": item.get("tenant_id")})
    return _dead_letter(item)


def retry_dead_letters(
    request: DeadLetterRetry, *, settings: Settings | None = None
) -> DeadLetterRetryResult:
    """Bulk retry: the given ids, or every dead letter (``limit`` per call, ``more`` if left)."""
    settings = settings or get_settings()
    table = settings.events_table
    more = False
    if request.all:
        items, last = outbox.list_dead_letters(table, limit=request.limit)
        pks = [i["pk"] for i in items]
        more = last is not None
    else:
        pks = []
        for dead_id in request.ids:
            try:
                pks.append(_pk_of(dead_id))
            except MeterbridgeError:
                continue
    at = rfc3339()
    wanted = {dead_letter_id(p) for p in pks}
    retried: list[str] = []
    skipped = [i for i in request.ids if i not in wanted]
    for pk in pks:
        ok = outbox.retry_dead_letter(table, pk, retried_at=at)
        (retried if ok else skipped).append(dead_letter_id(pk))
    logger.info("dead letters retried", extra={"retried": len(retried), "skipped": len(skipped)})
    return DeadLetterRetryResult(retried=retried, skipped=skipped, more=more)
