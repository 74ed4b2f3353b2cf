"""One Powertools logger, tracer and metrics for the whole process, created once and imported.

Service name and namespace come from POWERTOOLS_SERVICE_NAME / POWERTOOLS_METRICS_NAMESPACE
(set per function in template.yaml); the defaults keep local runs and tests quiet and valid.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
    AmazonCloudWatchEMFProvider,
)
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.constants import MAX_METRICS

if TYPE_CHECKING:  # pragma: no cover
    from aws_lambda_powertools import Tracer

os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "meterbridge")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Meterbridge")


class LazyTracer:
    """Powertools' Tracer, built on first use instead of at import.

    The X-Ray SDK imports botocore (about 150 ms here). Handlers import in less than half the
    time when it loads with the first traced invocation, which also needs botocore for
    DynamoDB. Powertools' ``Tracer()`` imports the SDK even when tracing is off, so it loads
    with the first invocation there too; only code that never runs a handler (the local
    stack's routes, most tests) never loads it. docs/performance/cold_start.md has figures.
    """

    def __init__(self) -> None:
        self._tracer: Tracer | None = None
        self._lock = threading.Lock()

    @property
    def real(self) -> Tracer:
        if self._tracer is None:
            with self._lock:
                if self._tracer is None:
                    from aws_lambda_powertools import Tracer

                    self._tracer = Tracer()
        return self._tracer

    def capture_lambda_handler(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        traced: list[Callable[..., Any]] = []

        @functools.wraps(handler)
        def wrapper(event: Any, context: Any) -> Any:
            if not traced:
                traced.append(self.real.capture_lambda_handler(handler))
            return traced[0](event, context)

        return wrapper

    def annotate_if_active(self, key: str, value: Any) -> None:
        """Annotate the current trace only where a handler is traced (never loads X-Ray)."""
        if self._tracer is not None:
            try:
                self._tracer.put_annotation(key=key, value=value)
            except Exception:  # noqa: BLE001 - tracing must never fail a request
                logger.debug("trace annotation skipped", extra={"key": key})

    def put_annotation(self, key: str, value: Any) -> None:
        self.real.put_annotation(key=key, value=value)

    def put_metadata(self, key: str, value: Any) -> None:
        self.real.put_metadata(key=key, value=value)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


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
tracer = LazyTracer()
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
    tracer.annotate_if_active("tenant_id", tenant_id)


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
