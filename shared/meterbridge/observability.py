"""One Powertools logger, tracer and metrics for the whole process, created once and imported.

Service name and namespace come from POWERTOOLS_SERVICE_NAME / POWERTOOLS_METRICS_NAMESPACE
(set per function in template.yaml); the defaults keep local runs and tests quiet and valid.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from aws_lambda_powertools import Logger, Metrics, Tracer

os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "meterbridge")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Meterbridge")

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@contextmanager
def tenant_context(tenant_id: str) -> Iterator[None]:
    """Put ``tenant_id`` on every log line and trace segment of the enclosed work.

    Uses Powertools' context-local keys, so concurrent requests on one event loop or thread
    pool (uvicorn locally) never see each other's tenant.
    """
    logger.thread_safe_append_keys(tenant_id=tenant_id)
    try:
        tracer.put_annotation(key="tenant_id", value=tenant_id)
    except Exception:  # noqa: BLE001 - tracing must never fail a request (no segment locally)
        pass
    try:
        yield
    finally:
        logger.thread_safe_remove_keys(["tenant_id"])


def bind_tenant(tenant_id: str) -> None:
    """Attach ``tenant_id`` to the current request's log context (removed by ``unbind``)."""
    logger.thread_safe_append_keys(tenant_id=tenant_id)


def unbind_tenant() -> None:
    logger.thread_safe_remove_keys(["tenant_id"])
