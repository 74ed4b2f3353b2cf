"""The bench's server process: the usage API under uvicorn on a moto server, an OpenMeter
sink for the flush, one Pro tenant, and the DynamoDB unit meter on the DAL's client.

Prints one JSON line ``{"url", "key"}`` and serves until stdin closes. Bench-only routes:
``GET /_bench/units`` (requests and units since the last call), ``POST /_bench/flush`` (runs
the flush until the outbox is empty).
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

from bench.client.units import UnitMeter


def main() -> None:
    os.environ.update({"NATS_ENABLED": "false", "POWERTOOLS_METRICS_NAMESPACE": "Bench"})
    os.environ.setdefault("METERBRIDGE_KEY_PEPPER", "bench-pepper")
    os.environ["POWERTOOLS_TRACE_DISABLED"] = "true"
    for var in ("AWS_ENDPOINT_URL", "OPENMETER_BASE_URL", "NATS_SERVERS"):
        os.environ.pop(var, None)
    suffix = uuid.uuid4().hex[:6]
    for var, lid in (
        ("TENANTS_TABLE", "tenants"),
        ("EVENTS_TABLE", "events"),
        ("USAGE_TABLE", "usage"),
        ("IDEMPOTENCY_TABLE", "idempotency"),
    ):
        os.environ[var] = f"bench-client-{lid}-{suffix}"

    from fastapi import FastAPI
    from starlette.concurrency import run_in_threadpool

    from meterbridge.api.usage import create_app
    from meterbridge.dal import dynamo
    from meterbridge.dal import keys as keys_dal
    from meterbridge.dal import tenants as tenants_dal
    from meterbridge.logic.flush import flush_outbox
    from meterbridge.logic.keys import format as keys
    from meterbridge.settings import get_settings
    from meterbridge_dev.stack.servers import BackgroundServer
    from meterbridge_dev.stack.stack import LocalStack

    stack = LocalStack(say=lambda _: None).start()
    try:
        settings = get_settings()
        tenant_id = "t_" + uuid.uuid4().hex[:16]
        now = datetime.now(UTC).isoformat()
        tenants_dal.put_tenant(
            settings.tenants_table,
            {
                "tenant_id": tenant_id,
                "name": "Bench",
                "email": "bench@example.com",
                "plan": "pro",
                "status": "active",
                "created_at": now,
            },
        )
        raw, lookup = keys.generate("test")
        keys_dal.put_key(
            settings.tenants_table,
            {
                "lookup_id": lookup,
                "tenant_id": tenant_id,
                "prefix": raw[:12],
                "key_hash": keys.hash_key(raw, settings.key_pepper),
                "status": "active",
                "created_at": now,
            },
        )
        meter = UnitMeter()
        meter.install(dynamo.client())
        usage = create_app()
        control = FastAPI()

        @control.get("/_bench/units")
        async def units() -> dict[str, Any]:
            return meter.take()

        @control.post("/_bench/flush")
        async def flush() -> dict[str, int]:
            sent = 0
            while True:
                result = await run_in_threadpool(flush_outbox, lambda: 60_000)
                sent += result.sent
                if result.sent == 0 and result.remaining == 0:
                    return {"sent": sent}

        async def app(scope: Any, receive: Any, send: Any) -> None:
            target = control if scope.get("path", "").startswith("/_bench") else usage
            await target(scope, receive, send)

        with BackgroundServer(app, graceful_timeout=2.0) as server:
            print(json.dumps({"url": server.url, "key": raw}), flush=True)
            sys.stdin.read()
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
