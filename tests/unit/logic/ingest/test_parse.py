"""Validation of a usage batch (logic/ingest/parse.py): pure, no storage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from meterbridge.errors import PayloadTooLarge, ValidationFailed
from meterbridge.logic.ingest import parse
from meterbridge.timestamps import rfc3339

NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
TENANT = "t-unit"


def _event(event_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": event_id, "type": "api.call", **extra}


def test_a_valid_batch_becomes_cloudevents_of_the_tenant_in_request_order() -> None:
    # Given two events, one with its own subject
    raw = [_event("e1"), _event("e2", subject="user-7")]

    # When the batch is validated
    batch = parse.validate(TENANT, raw, now=NOW)

    # Then both are CloudEvents of the tenant's source, billed to the tenant
    assert [e.id for e in batch.events] == ["e1", "e2"]
    assert {e.subject for e in batch.events} == {TENANT}
    assert len({e.source for e in batch.events}) == 1
    assert {e.time for e in batch.events} == {rfc3339(NOW)}
    assert len(batch.feeds) == 2 and batch.repeats == 0


def test_repeats_inside_a_batch_are_dropped_and_counted() -> None:
    # Given a batch that holds one id three times
    raw = [_event("e1"), _event("e1"), _event("e2"), _event("e1")]

    # When it is validated
    batch = parse.validate(TENANT, raw, now=NOW)

    # Then each id is kept once and the repeats are counted
    assert [e.id for e in batch.events] == ["e1", "e2"]
    assert batch.repeats == 2


@pytest.mark.parametrize(
    ("bad", "loc"),
    [
        ({"id": "x", "type": "api.call", "time": "2026-01-01T00:00:00Z"}, ["time"]),
        ({"id": "x", "type": "api.call", "time": "2026-11-20T10:30:00Z"}, ["time"]),
        ({"id": "x", "type": "api.call", "data": {"n": float("nan")}}, ["data", "n"]),
        ({"type": "api.call"}, ["id"]),
    ],
)
def test_one_invalid_event_fails_the_whole_batch_naming_its_index(
    bad: dict[str, Any], loc: list[str]
) -> None:
    # Given a batch of good events around one bad one
    raw = [_event("a"), bad, _event("b")]

    # When it is validated
    with pytest.raises(ValidationFailed) as caught:
        parse.validate(TENANT, raw, now=NOW)

    # Then nothing passes, and the problem names the event and where
    details = caught.value.details
    assert [d["index"] for d in details] == [1]
    assert details[0]["errors"][0]["loc"] == loc


def test_the_late_event_policy_is_the_callers_max_age() -> None:
    # Given an event 60 days old
    old = _event("old", time=(NOW - timedelta(days=60)).isoformat().replace("+00:00", "Z"))

    # When live ingest validates it, and when a backfill allowing 400 days does
    with pytest.raises(ValidationFailed):
        parse.validate(TENANT, [old], now=NOW)
    batch = parse.validate(TENANT, [old], now=NOW, max_age=timedelta(days=400))

    # Then live ingest refuses it and the backfill keeps it
    assert [e.id for e in batch.events] == ["old"]


def test_a_type_meterbridge_emits_cannot_be_sent_as_usage() -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse.validate(TENANT, [_event("x", type="usage.threshold_reached")], now=NOW)
    assert caught.value.details[0]["errors"][0]["loc"] == ["type"]


def test_the_body_limits_are_refused_before_validation() -> None:
    # Given a body over the byte limit and one over the event limit
    too_big = b"[" + b" " * parse.MAX_BODY_BYTES + b"]"
    too_many = ("[" + ",".join(['{"id":"a","type":"api.call"}'] * 1001) + "]").encode()

    # When / Then each is refused as too large
    with pytest.raises(PayloadTooLarge):
        parse.parse_body(too_big)
    with pytest.raises(PayloadTooLarge):
        parse.parse_body(too_many)
    with pytest.raises(ValidationFailed):
        parse.parse_body(b"[]")
    assert parse.parse_body(b'{"id": "a", "type": "api.call"}') == [_event("a")]
