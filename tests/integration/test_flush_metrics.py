"""The flush's Prometheus metrics move where it runs in a long-lived process (issue 17)."""

from __future__ import annotations

from meterbridge_streaming.metrics import (
    OPENMETER_EVENTS_SENT,
    OPENMETER_FLUSH_ERRORS,
    OPENMETER_FLUSH_LATENCY,
    observe_flush,
)
from tests.support import flush as flush_support
from tests.support.flush import fill_outbox, make_events, run_flush

sink = flush_support.sink


def _value(metric: object, suffix: str = "_total") -> float:
    for family in metric.collect():  # type: ignore[attr-defined]
        for sample in family.samples:
            if sample.name.endswith(suffix):
                return float(sample.value)
    raise AssertionError(f"no {suffix} sample")


def test_failed_requests_are_counted_and_recorded_with_sent_and_latency(aws, sink):
    # Given 10 events, a poison one and OpenMeter answering one 500 first
    state, url = sink
    events = make_events(10)
    fill_outbox(aws["EventsTable"], events)
    state.poison(events[3].id)
    state.script("error")
    before = (
        _value(OPENMETER_EVENTS_SENT),
        _value(OPENMETER_FLUSH_ERRORS),
        _value(OPENMETER_FLUSH_LATENCY, "_count"),
    )

    # When the flush runs and its result is recorded as the local stack's timer does
    result = run_flush(url)
    observe_flush(result.model_dump())

    # Then the 500 and the rejections on the way to the poison event are failed requests
    assert result.sent == 9 and result.dead_lettered == 1
    assert result.failed_requests >= 2  # the 500, and at least the request holding the poison
    assert _value(OPENMETER_EVENTS_SENT) - before[0] == 9
    assert _value(OPENMETER_FLUSH_ERRORS) - before[1] == result.failed_requests
    assert _value(OPENMETER_FLUSH_LATENCY, "_count") - before[2] == 1
