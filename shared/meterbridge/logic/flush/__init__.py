"""The OpenMeter flush: drain the outbox exactly once, whatever fails (issues 5 and 16).

``run`` is the Lambda's entry (functions/openmeter_flush); ``flush_outbox`` runs one
``runner.Flusher`` and reports it (log, EMF, ``meterbridge status``). The parts of a run,
by job: ``config`` (what they share), ``legacy`` (the segment layout left after an upgrade),
``reader`` (the backlog and the stream), ``recovery`` (a gap the stream trimmed),
``delivery`` (POSTs, bisection, dead letters) and ``republish`` (NATS). docs/flush.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from meterbridge.adapters.openmeter import OpenMeterClient, get_client
from meterbridge.bus.publisher import get_publisher
from meterbridge.errors import MeterbridgeError
from meterbridge.logic.flush.runner import Flusher
from meterbridge.logic.status import outbox_gauges, record_flush
from meterbridge.models.flush import FlushConfig, FlushResult
from meterbridge.observability import logger, metrics
from meterbridge.settings import Settings, get_settings


def flush_outbox(
    remaining_ms: Callable[[], int] | None = None,
    *,
    settings: Settings | None = None,
    config: FlushConfig | None = None,
    client: OpenMeterClient | None = None,
    publisher: Any = None,
    clock: Callable[[], float] = time.time,
) -> FlushResult:
    """Run one flush; log the result and emit it as metrics."""

    settings = settings or get_settings()
    if publisher is None:
        publisher = get_publisher()
    flusher = Flusher(
        table=settings.events_table,
        lease_table=settings.idempotency_table,
        client=client or get_client(settings),
        config=config or FlushConfig.from_settings(settings),
        remaining_ms=remaining_ms,
        clock=clock,
        send_enabled=settings.openmeter_enabled,
        publisher=publisher,
    )
    result = flusher.run()
    logger.info(
        "flush finished",
        extra={**result.model_dump(), "openmeter_enabled": settings.openmeter_enabled},
    )
    metrics.add_metric(name="OpenMeterEventsSent", unit=MetricUnit.Count, value=result.sent)
    metrics.add_metric(name="OpenMeterFlushRetried", unit=MetricUnit.Count, value=result.retried)
    metrics.add_metric(
        name="OpenMeterFlushDeadLettered", unit=MetricUnit.Count, value=result.dead_lettered
    )
    metrics.add_metric(name="OutboxRemaining", unit=MetricUnit.Count, value=result.remaining)
    metrics.add_metric(name="OutboxRecovered", unit=MetricUnit.Count, value=result.recovered)
    metrics.add_metric(name="OutboxRecoveryWindows", unit=MetricUnit.Count, value=result.recovering)
    metrics.add_metric(
        name="OpenMeterFlushDuration", unit=MetricUnit.Milliseconds, value=result.duration_ms
    )
    metrics.add_metric(
        name="OpenMeterCircuitState", unit=MetricUnit.Count, value=int(flusher.client.breaker.state)
    )
    _record_for_operators(result, int(flusher.client.breaker.state), settings)
    return result


def _record_for_operators(result: FlushResult, breaker: int, settings: Settings) -> None:
    """The last result for ``meterbridge status`` and the backlog gauges the alarms watch.

    Bookkeeping only: a failure here is logged and never fails the run it describes.
    """

    try:
        record_flush(result, openmeter_breaker=breaker, settings=settings)
        gauges = outbox_gauges(settings)
    except MeterbridgeError as exc:
        logger.warning("flush bookkeeping failed", extra={"error": exc.code})
        return
    metrics.add_metric(
        name="OutboxOldestAgeSeconds", unit=MetricUnit.Seconds, value=gauges.oldest_pending_age_s
    )
    metrics.add_metric(name="DeadLetters", unit=MetricUnit.Count, value=gauges.dead_letters)


def run(remaining_ms: Callable[[], int] | None = None) -> dict[str, Any]:
    """The Lambda's entry: ``{sent, retried, dead_lettered, remaining, duration_ms, ...}``."""
    return flush_outbox(remaining_ms).model_dump()
