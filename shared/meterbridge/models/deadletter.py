"""Dead letters: events OpenMeter rejected, as the admin API and the CLI show them."""

from typing import Any

from pydantic import BaseModel, Field


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
