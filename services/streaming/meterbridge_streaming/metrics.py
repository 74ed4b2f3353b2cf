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

from meterbridge.observability import add_gauge_sink

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
STRIPE_WEBHOOK_LATENCY = Histogram(
    "meterbridge_stripe_webhook_latency_seconds",
    "Time to verify, dedupe and apply one Stripe webhook delivery",
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
API_REQUESTS = Counter(
    "meterbridge_api_requests_total",
    "HTTP requests served",
    ["route", "status"],
    registry=REGISTRY,
)


# Streaming service (issue 7): the NATS bridge and the SSE fan-out.
NATS_FALLBACK_ACTIVE = Gauge(
    "meterbridge_nats_fallback_active",
    "1 while the NATS bridge serves from the in-memory fallback bus (NATS unreachable)",
    registry=REGISTRY,
)
NATS_CONNECTED = Gauge(
    "meterbridge_nats_connected",
    "1 while the NATS bridge holds a JetStream connection and consumer",
    registry=REGISTRY,
)
NATS_RECONNECTS = Counter(
    "meterbridge_nats_reconnects_total",
    "Successful (re)connections of the NATS bridge after a loss",
    registry=REGISTRY,
)
NATS_MESSAGES_DELIVERED = Counter(
    "meterbridge_nats_messages_delivered_total",
    "Events the bridge handed to its consumers, by origin (jetstream or fallback)",
    ["origin"],
    registry=REGISTRY,
)
STREAM_EVENTS_BY_KIND = Counter(
    "meterbridge_stream_events_total",
    "Events seen by the bridge's metering consumer, by kind (usage, billing, tenant)",
    ["kind"],
    registry=REGISTRY,
)
SSE_CLIENTS_CONNECTED = Gauge(
    "meterbridge_sse_clients_connected",
    "Server-Sent Events clients currently connected",
    registry=REGISTRY,
)
SSE_CLIENTS_DROPPED = Counter(
    "meterbridge_sse_clients_dropped_total",
    "SSE clients closed by the server, by reason (slow_consumer, shutdown, replay_failed, "
    "key_revoked, tenant_suspended, tenant_offboarded)",
    ["reason"],
    registry=REGISTRY,
)
SSE_EVENTS_DELIVERED = Counter(
    "meterbridge_sse_events_delivered_total",
    "Event frames written to SSE clients",
    registry=REGISTRY,
)
SSE_REPLAYS = Counter(
    "meterbridge_sse_replays_total",
    "Resumes with Last-Event-ID, by source (buffer, jetstream, reset)",
    ["source"],
    registry=REGISTRY,
)
STREAM_DELIVERY_LATENCY = Histogram(
    "meterbridge_stream_delivery_latency_seconds",
    "From the JetStream store time of an event to its write to SSE clients (one observation"
    " per event fan-out; one per frame for queued writes)",
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


def render_latest() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def observe_flush(result: dict[str, object]) -> None:
    """Record one flush run (a ``FlushResult`` dict) where the flush runs in a long-lived
    process (the local stack's timer); on AWS the flush Lambda reports through EMF instead."""
    sent, failed, duration = (result.get(k) for k in ("sent", "failed_requests", "duration_ms"))
    if isinstance(sent, int) and sent > 0:
        OPENMETER_EVENTS_SENT.inc(sent)
    if isinstance(failed, int) and failed > 0:
        OPENMETER_FLUSH_ERRORS.inc(failed)
    if isinstance(duration, int | float):
        OPENMETER_FLUSH_LATENCY.observe(duration / 1000.0)


BILLING_UNBILLED_CENTS = Gauge(
    "meterbridge_billing_unbilled_cents",
    "Overage metered but not on any Stripe invoice, per period, at the last reconcile",
    ["period"],
    registry=REGISTRY,
)


def _set_layer_gauge(name: str, value: float, labels: dict[str, str]) -> None:
    """The layer's process gauges (``meterbridge.observability.set_gauge``), by name."""
    if name != "billing_unbilled_cents":
        raise KeyError(f"no Prometheus gauge is named {name!r}")
    BILLING_UNBILLED_CENTS.labels(**labels).set(value)


add_gauge_sink(_set_layer_gauge)
