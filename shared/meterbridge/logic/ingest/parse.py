"""Parse and validate a usage request: every event checked before anything is stored.

A batch is refused whole when one event is invalid (docs/usage.md): the body's size and JSON,
each event's size, shape, type, time and meter values. What passes is a ``Batch`` of
CloudEvents, repeats inside the request dropped.
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from meterbridge.errors import PayloadTooLarge, ValidationFailed
from meterbridge.logic import meters
from meterbridge.models.cloudevent import CloudEvent, is_reserved_type, usage_source
from meterbridge.models.usage import InboundEvent
from meterbridge.plans import catalog
from meterbridge.timestamps import rfc3339

MAX_BODY_BYTES = 1_000_000
MAX_EVENTS = 1_000
MAX_EVENT_BYTES = 64 * 1024
MAX_AGE = timedelta(days=35)
MAX_AHEAD = timedelta(minutes=5)


@dataclass
class Batch:
    """A validated batch: CloudEvents in request order, with what each feeds (its meters'
    values, logic/meters.py)."""

    events: list[CloudEvent]
    feeds: list[list[meters.Feed]]
    repeats: int = 0


def _non_finite(name: str) -> float:
    # NaN/Infinity are not JSON: parsed as floats here so validate() names where they are.
    return float(name)


# The largest magnitude a float64 holds: OpenMeter (Go) refuses any number past it.
_FLOAT64_MAX = sys.float_info.max
# Only a run of 309+ digits can be an integer past float64's range (about 1.8e308).
_LONG_DIGITS_MIN = 309
_LONG_DIGITS = re.compile(r"\d{309}")


def _bad_number(value: Any) -> list[str] | None:
    """The path of the first number a strict JSON parser (Go's) would refuse, or None.

    Non-finite floats (``NaN``, ``Infinity``, ``1e400`` parsed as ``inf``) and integers past the
    float64 range. Iterative, so any nesting the parser accepted is walked without recursion.
    """
    stack: list[tuple[Any, list[str]]] = [(value, [])]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            stack.extend((v, [*path, str(k)]) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, [*path, str(i)]) for i, v in enumerate(node))
        elif isinstance(node, float):
            if not math.isfinite(node):
                return path
        elif isinstance(node, int) and not isinstance(node, bool) and abs(node) > _FLOAT64_MAX:
            return path
    return None


def parse_body(raw: bytes) -> list[Any]:
    """The request body as a list of JSON objects (one event or an array)."""
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge(
            f"the request body is over {MAX_BODY_BYTES} bytes",
            details={"limit_bytes": MAX_BODY_BYTES},
        )
    try:
        body = json.loads(raw, parse_constant=_non_finite)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationFailed("the body is not valid JSON", details={"error": str(exc)}) from None
    except RecursionError:
        raise ValidationFailed("the body is nested too deeply") from None
    # Lone surrogates parse (from a backslash-u escape, or from UTF-8 bytes, which json decodes
    # with surrogatepass) but cannot be stored or sent as UTF-8. A UTF-8 body with neither an
    # escape nor an 0xED byte cannot hold one; NUL bytes mean UTF-16/32, always checked.
    if b"\\u" in raw or b"\xed" in raw or b"\x00" in raw:
        try:
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationFailed("the body holds text that is not valid Unicode") from None
    events = body if isinstance(body, list) else [body]
    if not events:
        raise ValidationFailed("the batch is empty")
    if len(events) > MAX_EVENTS:
        raise PayloadTooLarge(
            f"a batch holds at most {MAX_EVENTS} events",
            details={"limit_events": MAX_EVENTS, "events": len(events)},
        )
    return events


def validate(
    tenant_id: str, raw_events: list[Any], *, now: datetime, max_age: timedelta | None = MAX_AGE
) -> Batch:
    """Every event checked before anything is stored; one bad event fails the whole batch."""
    problems: list[dict[str, Any]] = []
    too_large: list[int] = []
    parsed: list[tuple[int, InboundEvent]] = []
    for index, raw in enumerate(raw_events):
        if not isinstance(raw, dict):
            problems.append(
                {"index": index, "errors": [{"loc": [], "message": "not a JSON object"}]}
            )
            continue
        text = json.dumps(raw, separators=(",", ":"))
        if len(text.encode()) > MAX_EVENT_BYTES:
            too_large.append(index)
            continue
        # A cheap screen on the text already made; the walk runs only when it may find one.
        if (
            "NaN" in text
            or "Infinity" in text
            or (len(text) > _LONG_DIGITS_MIN and _LONG_DIGITS.search(text))
        ):
            bad = _bad_number(raw)
            if bad is not None:
                problems.append(
                    {
                        "index": index,
                        "errors": [
                            {
                                "loc": bad,
                                "message": "numbers must be finite and within the float64 "
                                "range (OpenMeter refuses NaN, Infinity and overflows)",
                            }
                        ],
                    }
                )
                continue
        try:
            event = InboundEvent.model_validate(raw)
        except ValidationError as exc:
            problems.append(
                {
                    "index": index,
                    "errors": [
                        {"loc": [str(p) for p in e["loc"]], "message": e["msg"]}
                        for e in exc.errors()
                    ],
                }
            )
            continue
        if is_reserved_type(event.type):
            problems.append(
                {
                    "index": index,
                    "errors": [
                        {
                            "loc": ["type"],
                            "message": f"{event.type!r} is a type meterbridge emits "
                            "(billing and lifecycle events); it cannot be sent as usage",
                        }
                    ],
                }
            )
            continue
        if event.time is not None:
            if max_age is not None and event.time < now - max_age:
                problems.append(
                    {
                        "index": index,
                        "errors": [
                            {
                                "loc": ["time"],
                                "message": f"older than {max_age.days} days (late-event policy)",
                            }
                        ],
                    }
                )
                continue
            if event.time > now + MAX_AHEAD:
                problems.append(
                    {
                        "index": index,
                        "errors": [
                            {"loc": ["time"], "message": "more than 5 minutes in the future"}
                        ],
                    }
                )
                continue
        parsed.append((index, event))
    if too_large:
        raise PayloadTooLarge(
            f"an event is over {MAX_EVENT_BYTES} bytes",
            details={"limit_bytes_per_event": MAX_EVENT_BYTES, "indexes": too_large},
        )
    if problems:
        raise ValidationFailed(
            f"{len(problems)} of {len(raw_events)} events are invalid; nothing was stored",
            details=problems,
        )
    source = usage_source(tenant_id)
    cat = catalog()
    fed = meters.resolve_batch(cat, parsed, len(raw_events))
    seen: set[str] = set()
    batch = Batch(events=[], feeds=[])
    for (_, event), event_feeds in zip(parsed, fed, strict=True):
        if event.id in seen:
            batch.repeats += 1
            continue
        seen.add(event.id)
        moment = event.time or now
        # OpenMeter's subject is the tenant (the customer it bills); the tenant's own subject
        # travels in data as the ``subject`` dimension (docs/meters.md).
        batch.events.append(
            CloudEvent(
                id=event.id,
                source=source,
                type=event.type,
                subject=tenant_id,
                time=rfc3339(moment.astimezone(UTC)),
                data=meters.with_subject(event.data, event.subject),
                dataschema=event.dataschema,
            )
        )
        batch.feeds.append(event_feeds)
    return batch


def event_time(event: CloudEvent) -> datetime:
    return datetime.fromisoformat(event.time.replace("Z", "+00:00"))
