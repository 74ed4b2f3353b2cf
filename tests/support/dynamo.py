"""DynamoDB call capture for tests that count requests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from meterbridge.dal import dynamo


@contextmanager
def dynamodb_calls(operation: str) -> Iterator[list[dict[str, Any]]]:
    """The requests of ``operation`` (e.g. ``GetItem``) the DAL's client sends meanwhile."""
    calls: list[dict[str, Any]] = []
    events = dynamo.client().meta.events
    event_name = f"before-parameter-build.dynamodb.{operation}"

    def record(params: dict[str, Any], **_: Any) -> None:
        calls.append(params)

    events.register(event_name, record)
    try:
        yield calls
    finally:
        events.unregister(event_name, record)
