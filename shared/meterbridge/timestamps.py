"""The one RFC 3339 timestamp format meterbridge writes: UTC, ``Z``, milliseconds by default."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

Timespec = Literal["auto", "seconds", "milliseconds", "microseconds"]


def rfc3339(moment: datetime | float | None = None, *, timespec: Timespec = "milliseconds") -> str:
    """``moment`` (a datetime, or epoch seconds; now when omitted) as ``2026-01-31T12:00:00.000Z``.

    An aware datetime is converted to UTC first; ``timespec`` is ``datetime.isoformat``'s.
    """
    if moment is None:
        moment = datetime.now(UTC)
    elif isinstance(moment, int | float):
        moment = datetime.fromtimestamp(moment, UTC)
    elif moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec=timespec).replace("+00:00", "Z")
