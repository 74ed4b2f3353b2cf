"""The OpenMeter flush: drain the outbox exactly once (issue 5)."""

from __future__ import annotations

from typing import Any

from meterbridge.errors import NotImplementedYet


def run(remaining_ms: Any = None) -> dict[str, Any]:
    raise NotImplementedYet("the OpenMeter flush is not available yet")
