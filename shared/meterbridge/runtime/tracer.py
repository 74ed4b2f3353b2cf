"""Powertools' Tracer where X-Ray SDK tracing is on, and no X-Ray SDK at all where it is off.

Powertools' ``Tracer()`` imports the X-Ray SDK even when tracing is disabled, and the SDK
imports botocore's session and its own sampler (140-170 ms of CPU here, more than a third of
the DynamoDB client the first request builds): with tracing off that is pure cost. Lambda's
active tracing (``Tracing: Active`` in template.yaml) records the invocation segment without the
SDK; the SDK adds the handler subsegment, the DynamoDB and HTTP subsegments and the
``tenant_id`` annotation.

The rule is Powertools' own (``Tracer._is_tracer_disabled``): off when
``POWERTOOLS_TRACE_DISABLED`` is true, outside Lambda, under SAM local or Chalice. Where it is
on (the deployed default, as before), the Tracer is built by ``install()`` in the handler's
init, not in its first request; where it is off, the handler is not wrapped and nothing of the
SDK is imported. docs/performance/cold_start.md has the figures and the default.
"""

import os
import threading
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.shared import constants
from aws_lambda_powertools.shared.functions import resolve_truthy_env_var_choice
from aws_lambda_powertools.tracing import Tracer


def sdk_tracing_enabled() -> bool:
    """Whether Powertools' Tracer would trace here (its rule, read from the environment)."""
    if resolve_truthy_env_var_choice(env=os.getenv(constants.TRACER_DISABLED_ENV, "false")):
        return False
    in_lambda = bool(os.getenv(constants.LAMBDA_TASK_ROOT_ENV))
    emulated = bool(os.getenv(constants.SAM_LOCAL_ENV) or os.getenv(constants.CHALICE_LOCAL_ENV))
    return in_lambda and not emulated


class HandlerTracer:
    """The process's tracer: decided once, by ``install()`` or the first decorated handler."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._decided = False
        self._tracer: Tracer | None = None

    def install(self) -> Tracer | None:
        """Build Powertools' Tracer (and load the SDK) if tracing is on; idempotent."""
        if not self._decided:
            with self._lock:
                if not self._decided:
                    self._tracer = Tracer() if sdk_tracing_enabled() else None
                    self._decided = True
        return self._tracer

    @property
    def active(self) -> bool:
        return self._tracer is not None

    def capture_lambda_handler(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        """Powertools' ``capture_lambda_handler`` where tracing is on; the handler itself where
        it is off (Powertools' wrapper would only call the disabled SDK's no-ops)."""
        tracer = self.install()
        return handler if tracer is None else tracer.capture_lambda_handler(handler)

    def annotate_if_active(self, key: str, value: Any) -> None:
        """Annotate the current trace where tracing is on; never loads the SDK."""
        if self._tracer is not None:
            self._tracer.put_annotation(key=key, value=value)
