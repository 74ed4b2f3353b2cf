"""The local stack's console: one line per request and per flush, readable or JSON.

On Lambda each function has its own process, so Powertools' Lambda context keys (function name,
request id, cold start) belong to every line it logs. Locally the flush runs on a timer thread
of the same process as the HTTP routes, and Powertools keeps those keys in one formatter shared
by all threads. The console formatter therefore keeps them only on lines logged by the flush's
own threads (``flush-*``): a local request is never labelled with the flush's context.

``text``: the request and flush lines, plus the functions' warnings and errors as
``LEVEL message key=value``. ``json``: every line is a JSON object (the functions' own records at
their configured level), one per line.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from meterbridge.timestamps import rfc3339

LAMBDA_KEYS = frozenset(
    {
        "function_name",
        "function_memory_size",
        "function_arn",
        "function_request_id",
        "cold_start",
        "xray_trace_id",
        "correlation_id",
        "lambda_context",
    }
)
_QUIET = frozenset({"level", "location", "timestamp", "service", "message", "sampling_rate"})

Emit = Callable[[dict[str, Any], str], None]


def is_flush_thread() -> bool:
    return threading.current_thread().name.startswith("flush-")


class ConsoleFormatter(logging.Formatter):
    """Wraps Powertools' formatter: drops the Lambda keys off the flush's threads."""

    def __init__(self, inner: logging.Formatter, log_format: str) -> None:
        super().__init__()
        self.inner = inner
        self.log_format = log_format

    def __getattr__(self, name: str) -> Any:
        # Powertools calls append_keys, clear_state ... on its formatter.
        return getattr(self.inner, name)

    def format(self, record: logging.LogRecord) -> str:
        text = self.inner.format(record)
        try:
            fields = json.loads(text)
        except ValueError:
            return text
        if not record.threadName or not record.threadName.startswith("flush-"):
            fields = {k: v for k, v in fields.items() if k not in LAMBDA_KEYS}
        if self.log_format == "json":
            return json.dumps(fields, default=str)
        extras = " ".join(f"{k}={v}" for k, v in fields.items() if k not in _QUIET)
        return f"{record.levelname:<7}    {fields.get('message', '')}" + (
            f"  {extras}" if extras else ""
        )


def install_console_logging(log_format: str, say: Callable[[str], None]) -> Emit:
    """Route the functions' logs through the console formatter; the request/flush emitter."""
    from meterbridge.observability import logger

    handler = logger.registered_handler  # type: ignore[attr-defined]
    handler.setFormatter(ConsoleFormatter(logger.registered_formatter, log_format))
    if log_format == "text":
        # The functions' INFO lines and EMF blobs repeat what the request and flush lines say.
        logger.setLevel(max(logging.WARNING, logger.log_level))
        os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
    lock = threading.Lock()

    def emit(fields: dict[str, Any], line: str) -> None:
        if log_format == "json":
            record = {"timestamp": rfc3339(timespec="seconds"), **fields}
            with lock:
                sys.stdout.write(json.dumps(record, default=str) + "\n")
                sys.stdout.flush()
        else:
            say(line)

    return emit


def request_line(method: str, path: str, status: int, ms: float, tenant: str | None) -> str:
    who = f"  tenant {tenant}" if tenant else ""
    return f"{method:<6}     {path} {status} {ms:.1f} ms{who}"
