"""Prometheus metrics of the long-running processes (streaming task, local stack).

Names follow the reference documents' metrics under a ``meterbridge_`` prefix. The Lambdas
emit CloudWatch EMF metrics through Powertools instead (observability.py).
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

REGISTRY = CollectorRegistry(auto_describe=True)

NATS_CIRCUIT_STATE = Gauge(
    "meterbridge_nats_circuit_state",
    "NATS circuit breaker state: 0 closed, 1 open, 2 half-open",
    registry=REGISTRY,
)
NATS_MESSAGES_PUBLISHED = Counter(
    "meterbridge_nats_messages_published_total",
    "Messages published to NATS JetStream",
    ["kind"],
    registry=REGISTRY,
)
OPENMETER_EVENTS_SENT = Counter(
    "meterbridge_openmeter_events_sent_total",
    "CloudEvents acknowledged by OpenMeter",
    registry=REGISTRY,
)
OPENMETER_FLUSH_ERRORS = Counter(
    "meterbridge_openmeter_flush_errors_total",
    "Failed OpenMeter ingest requests",
    registry=REGISTRY,
)
OPENMETER_FLUSH_LATENCY = Histogram(
    "meterbridge_openmeter_flush_latency_seconds",
    "Duration of one flush run",
    registry=REGISTRY,
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
STRIPE_WEBHOOKS_RECEIVED = Counter(
    "meterbridge_stripe_webhooks_received_total",
    "Stripe webhooks received",
    ["type", "outcome"],
    registry=REGISTRY,
)
API_REQUESTS = Counter(
    "meterbridge_api_requests_total",
    "HTTP requests served",
    ["route", "status"],
    registry=REGISTRY,
)


def render_latest() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
