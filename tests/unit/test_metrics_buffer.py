"""observability.metrics: the provider with the short debug line buffers and flushes exactly
as Powertools' own (values kept in order, a blob at 100 values, validation unchanged)."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
from aws_lambda_powertools.metrics.exceptions import MetricUnitError

from meterbridge.observability import metrics


@pytest.fixture(autouse=True)
def _empty() -> None:
    metrics.clear_metrics()


def test_values_are_kept_in_order_and_flushed_at_one_hundred() -> None:
    # Given 150 values of one count
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for i in range(150):
            metrics.add_metric(name="BufferTest", unit="Count", value=i)

    # Then the first 100 went out in one EMF blob, in order, and 50 wait in the buffer
    (blob,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert blob["BufferTest"] == [float(i) for i in range(100)]
    assert metrics.metric_set["BufferTest"]["Value"] == [float(i) for i in range(100, 150)]


def test_a_bad_unit_is_still_refused_and_keeps_the_buffer() -> None:
    metrics.add_metric(name="BufferTest", unit="Count", value=1)
    with pytest.raises(MetricUnitError):
        metrics.add_metric(name="BufferTest", unit="Furlongs", value=2)
    assert metrics.metric_set["BufferTest"]["Value"] == [1.0]
