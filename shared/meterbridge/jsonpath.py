"""A strict JSONPath subset for meter values and dimensions: one path, one value.

A meter's ``value_property`` or ``group_by`` path must name exactly one place in the event's
``data``: ``$.tokens``, ``$.usage.output_tokens``, ``$['key with spaces']``, ``$.items[0]``.
Wildcards, slices, filters and recursive descent select several values, which a meter cannot
add up once per event, so they are refused at catalogue load with the path's position; a
full JSONPath library (jsonpath-ng and its parser generator) would accept them and cost the
usage API's cold start. The subset is a subset of OpenMeter's JSONPath, so one definition
serves both systems.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_NAME = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)")
_QUOTED = re.compile(r"\[\s*'((?:[^'\\]|\\.)*)'\s*\]|\[\s*\"((?:[^\"\\]|\\.)*)\"\s*\]")
_INDEX = re.compile(r"\[\s*(\d+)\s*\]")

MISSING: Any = object()


class JSONPathError(ValueError):
    """A path outside the supported subset; the message names the position."""


@dataclass(frozen=True)
class JSONPath:
    text: str
    steps: tuple[str | int, ...]

    def find(self, data: Any) -> Any:
        """The value at this path, or ``MISSING``."""
        current = data
        for step in self.steps:
            if isinstance(step, int):
                if not isinstance(current, list) or step >= len(current):
                    return MISSING
            elif not isinstance(current, dict) or step not in current:
                return MISSING
            current = current[step]
        return current


def parse(text: str) -> JSONPath:
    """Parse ``text``; ``JSONPathError`` if it is not a single-value path."""
    if not isinstance(text, str) or not text.startswith("$"):
        raise JSONPathError(f"{text!r} must start with '$'")
    steps: list[str | int] = []
    pos = 1
    while pos < len(text):
        for pattern in (_NAME, _QUOTED, _INDEX):
            match = pattern.match(text, pos)
            if match:
                break
        else:
            raise JSONPathError(
                f"{text!r}: unsupported syntax at position {pos} (use $.a.b, $['a'] or $.a[0])"
            )
        if pattern is _INDEX:
            steps.append(int(match.group(1)))
        elif pattern is _QUOTED:
            raw = match.group(1) if match.group(1) is not None else match.group(2)
            steps.append(re.sub(r"\\(.)", r"\1", raw))
        else:
            steps.append(match.group(1))
        pos = match.end()
    if not steps:
        raise JSONPathError(f"{text!r} names the whole data object, not one value")
    return JSONPath(text=text, steps=tuple(steps))
