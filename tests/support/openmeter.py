"""CloudEvents as OpenMeter's ingest API takes them: content types and a builder."""

from __future__ import annotations

from typing import Any

BATCH = "application/cloudevents-batch+json"
SINGLE = "application/cloudevents+json"


def cloudevent(
    event_id: str, source: str = "//meterbridge/tenants/t1", **extra: Any
) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": "api.request",
        "subject": "customer-1",
        "time": "2025-01-01T00:00:00.000Z",
        "data": {"tokens": 3},
        **extra,
    }
