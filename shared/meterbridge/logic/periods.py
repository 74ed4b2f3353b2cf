"""Billing periods: calendar months in UTC, named ``YYYY-MM``."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from meterbridge.errors import ValidationFailed

_PERIOD = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def period_of(moment: datetime) -> str:
    return f"{moment.year:04d}-{moment.month:02d}"


def bounds(period: str) -> tuple[datetime, datetime]:
    match = _PERIOD.match(period)
    if not match:
        raise ValidationFailed(f"period {period!r} is not YYYY-MM")
    year, month = int(match.group(1)), int(match.group(2))
    if not 1970 <= year <= 9998:
        raise ValidationFailed(f"period {period!r} is out of range (1970-01 to 9998-12)")
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def seconds_until_end(period: str, now: datetime) -> int:
    return max(1, int((bounds(period)[1] - now).total_seconds()))


def month_range(first: str, last: str, max_periods: int = 12) -> list[str]:
    start, _ = bounds(first)
    stop, _ = bounds(last)
    if stop < start:
        raise ValidationFailed("'from' must not be after 'to'")
    periods = []
    year, month = start.year, start.month
    while (year, month) <= (stop.year, stop.month):
        periods.append(f"{year:04d}-{month:02d}")
        year, month = year + (month == 12), month % 12 + 1
        if len(periods) > max_periods:
            raise ValidationFailed(f"at most {max_periods} periods per request")
    return periods
