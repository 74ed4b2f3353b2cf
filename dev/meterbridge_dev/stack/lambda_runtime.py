"""Run a Lambda handler in-process as ``sam local invoke`` would in a container.

Handlers are loaded from ``functions/<name>/app.py`` by file path (every function's module is
called ``app``, so they cannot share one import name), with a Lambda context that counts down
the function's timeout like the real one.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import meterbridge
from meterbridge.timestamps import rfc3339

FUNCTIONS = ("usage_api", "tenant_admin", "stripe_webhook", "openmeter_flush")


def repo_root() -> Path:
    """The checkout root (``shared/meterbridge`` is two levels below it)."""
    return Path(meterbridge.__file__).resolve().parents[2]


@dataclass
class LocalLambdaContext:
    """The attributes and method of ``awslambdaric``'s context that handlers use."""

    function_name: str = "meterbridge-local"
    timeout_s: float = 60.0
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = "/aws/lambda/meterbridge-local"
    log_stream_name: str = "local"
    _started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:000000000000:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        left = self.timeout_s - (time.monotonic() - self._started)
        return max(0, int(left * 1000))


_handlers: dict[str, Callable[[dict[str, Any], Any], Any]] = {}


def load_handler(function: str) -> Callable[[dict[str, Any], Any], Any]:
    """``lambda_handler`` of ``functions/<function>/app.py`` (loaded once)."""
    if function not in FUNCTIONS:
        raise ValueError(f"unknown function {function!r}; one of {', '.join(FUNCTIONS)}")
    if function not in _handlers:
        path = repo_root() / "functions" / function / "app.py"
        spec = importlib.util.spec_from_file_location(f"meterbridge_fn_{function}", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        _handlers[function] = module.lambda_handler
    return _handlers[function]


def load_event(path: str | Path) -> dict[str, Any]:
    event = json.loads(Path(path).read_text())
    if not isinstance(event, dict):
        raise ValueError(f"{path}: a Lambda event is a JSON object")
    return event


def invoke(function: str, event: dict[str, Any], timeout_s: float = 60.0) -> Any:
    handler = load_handler(function)
    context = LocalLambdaContext(function_name=f"meterbridge-{function}", timeout_s=timeout_s)
    return handler(event, context)


def scheduled_event() -> dict[str, Any]:
    """A fresh EventBridge scheduled event, as ``rate(1 minute)`` sends it."""
    event = load_event(repo_root() / "events" / "eventbridge-scheduled.json")
    event["id"] = str(uuid.uuid4())
    event["time"] = rfc3339(timespec="seconds")
    return event
