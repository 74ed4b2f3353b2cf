"""One Powertools logger, tracer and metrics for the whole process, created once and imported.

Service name and namespace come from POWERTOOLS_SERVICE_NAME / POWERTOOLS_METRICS_NAMESPACE
(set per function in template.yaml); the defaults keep local runs and tests quiet and valid.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
    AmazonCloudWatchEMFProvider,
)
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.constants import MAX_METRICS

from meterbridge.runtime.tracer import HandlerTracer

os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "meterbridge")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Meterbridge")


class _ShortDebugLine(AmazonCloudWatchEMFProvider):
    """Powertools' EMF provider, with ``add_metric`` costing the same at the 99th value.

    Powertools formats the metric, with every value buffered so far, into a debug message on
    each call (whatever the log level): under uvicorn, where nothing flushes per request, a
    count costs O(values buffered), up to 100 (about 30 us per ingest request). Here the call
    sees only the new value and the buffer is put back after, so the EMF output, the
    validation and the flush at 100 values or metrics are Powertools' own.
    """

    def add_metric(self, name: str, unit: Any, value: float, resolution: Any = 60) -> None:
        held = self.metric_set.get(name.strip())
        if (
            held is None
            or len(held["Value"]) + 1 >= MAX_METRICS  # this one flushes: Powertools' way
            or len(self.metric_set) >= MAX_METRICS - 1
        ):
            super().add_metric(name=name, unit=unit, value=value, resolution=resolution)
            return
        values = held["Value"]
        held["Value"] = []
        try:
            super().add_metric(name=name, unit=unit, value=value, resolution=resolution)
        finally:
            values.extend(held["Value"])
            held["Value"] = values


logger = Logger()
# Installed by each handler's init (meterbridge.runtime.tracer): no X-Ray SDK where tracing is off.
tracer = HandlerTracer()
metrics = Metrics()
metrics.provider.__class__ = _ShortDebugLine  # same state, one method replaced


@contextmanager
def tenant_context(tenant_id: str) -> Iterator[None]:
    """Put ``tenant_id`` on every log line and trace segment of the enclosed work.

    Uses Powertools' context-local keys, so concurrent requests on one event loop or thread
    pool (uvicorn locally) never see each other's tenant.
    """
    bind_tenant(tenant_id)
    try:
        yield
    finally:
        logger.thread_safe_remove_keys(["tenant_id"])


def bind_tenant(tenant_id: str) -> None:
    """Attach ``tenant_id`` to the request's log lines and its X-Ray trace."""
    logger.thread_safe_append_keys(tenant_id=tenant_id)
    try:
        tracer.annotate_if_active("tenant_id", tenant_id)
    except Exception:  # noqa: BLE001 - tracing must never fail a request
        logger.debug("trace annotation skipped", extra={"key": "tenant_id"})


# Long-running processes (the local stack, the streaming task) also serve Prometheus /metrics;
# a Lambda has none, and the layer never imports prometheus-client. Such a process registers a
# sink (meterbridge_streaming.metrics does at import); with none registered, a gauge is a no-op.
GaugeSink = Callable[[str, float, dict[str, str]], None]
_gauge_sinks: list[GaugeSink] = []


def add_gauge_sink(sink: GaugeSink) -> None:
    if sink not in _gauge_sinks:
        _gauge_sinks.append(sink)


def set_gauge(name: str, value: float, **labels: str) -> None:
    """Set the process gauge ``name`` (e.g. ``billing_unbilled_cents``) where one is served."""
    for sink in _gauge_sinks:
        sink(name, value, labels)
