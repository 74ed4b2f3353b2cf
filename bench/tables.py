"""A benchmark's environment and fresh tables, named in it and made from template.yaml."""

import os
import uuid

# A bench's processes: the usage API alone (NATS, OpenMeter, tracing and metrics off).
BENCH_ENV = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "NATS_ENABLED": "false",
    "OPENMETER_ENABLED": "false",
}

TABLES = {
    "TenantsTable": "TENANTS_TABLE",
    "EventsTable": "EVENTS_TABLE",
    "UsageTable": "USAGE_TABLE",
    "IdempotencyTable": "IDEMPOTENCY_TABLE",
}


def fresh_tables(moto_url: str) -> dict[str, str]:
    """Create the four tables in the moto server at ``moto_url``; returns logical id -> name."""
    os.environ["AWS_ENDPOINT_URL"] = moto_url
    suffix = uuid.uuid4().hex[:6]
    names = {lid: f"bench-{lid.lower()}-{suffix}" for lid in TABLES}
    os.environ.update({var: names[lid] for lid, var in TABLES.items()})
    from meterbridge.dal import dynamo
    from meterbridge.settings import get_settings
    from meterbridge_dev.stack.tables import create_tables

    get_settings.cache_clear()
    dynamo.reset_clients()
    create_tables(dynamo.client(), names)
    return names
