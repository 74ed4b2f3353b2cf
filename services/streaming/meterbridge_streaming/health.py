"""Liveness and readiness checks (docs/health-endpoints.md).

Ready means DynamoDB answers: it holds every accepted event, so without it nothing may be
accepted. NATS and OpenMeter are reported but only degrade readiness: when they are down,
events wait in the outbox and nothing is lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from meterbridge.settings import Settings, get_settings

Check = Callable[[], Awaitable[dict[str, Any]]]

# Components that hold live state (the streaming bridge) register their own checks here.
_extra_checks: dict[str, Check] = {}


def register_check(name: str, check: Check) -> None:
    _extra_checks[name] = check


def unregister_check(name: str) -> None:
    _extra_checks.pop(name, None)


async def _timed(check: Check) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        result = await asyncio.wait_for(check(), timeout=3.0)
    except Exception as exc:  # noqa: BLE001 - a failing dependency is a result, not a crash
        result = {"status": "down", "error": type(exc).__name__}
    result["latency_ms"] = round((time.perf_counter() - start) * 1000, 1)
    return result


async def check_dynamodb(settings: Settings) -> dict[str, Any]:
    from meterbridge.dal import dynamo

    def describe() -> list[str]:
        tables = [
            settings.tenants_table,
            settings.events_table,
            settings.usage_table,
            settings.idempotency_table,
        ]
        for table in tables:
            dynamo.client().describe_table(TableName=table)
        return tables

    tables = await asyncio.to_thread(describe)
    return {"status": "up", "tables": len(tables)}


async def _tcp_probe(url: str, default_port: int) -> dict[str, Any]:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else default_port)
    _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=1.5)
    writer.close()
    await writer.wait_closed()
    return {"status": "up"}


async def check_nats(settings: Settings) -> dict[str, Any]:
    if not settings.nats_enabled:
        return {"status": "disabled"}
    return await _tcp_probe(settings.nats_servers[0], 4222)


async def check_openmeter(settings: Settings) -> dict[str, Any]:
    if not settings.openmeter_enabled:
        return {"status": "paused"}
    result = await _tcp_probe(settings.openmeter_base_url, 80)
    result["base_url"] = settings.openmeter_base_url
    return result


async def readiness(settings: Settings | None = None) -> tuple[bool, dict[str, Any]]:
    """Overall readiness and the state of each dependency."""
    settings = settings or get_settings()
    checks: dict[str, Check] = {
        "dynamodb": lambda: check_dynamodb(settings),
        "nats": lambda: check_nats(settings),
        "openmeter": lambda: check_openmeter(settings),
        **_extra_checks,
    }
    names = list(checks)
    results = await asyncio.gather(*(_timed(checks[n]) for n in names))
    components = dict(zip(names, results, strict=True))
    ready = components["dynamodb"]["status"] == "up"
    degraded = any(c["status"] == "down" for c in components.values())
    status = "ready" if ready and not degraded else ("degraded" if ready else "not_ready")
    return ready, {"status": status, "components": components}
