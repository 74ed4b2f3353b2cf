"""meterbridge.runtime: the lazy module list and the tracer's on/off rule (issue 19).

What a handler's init and first request import is checked in
tests/unit/project/test_cold_start_imports.py.
"""

import itertools
import types

import pytest
from aws_lambda_powertools.tracing import Tracer

from meterbridge.runtime import lazy
from meterbridge.runtime.tracer import HandlerTracer, sdk_tracing_enabled

TRACER_VARS = (
    "POWERTOOLS_TRACE_DISABLED",
    "LAMBDA_TASK_ROOT",
    "AWS_SAM_LOCAL",
    "AWS_CHALICE_CLI_MODE",
)
CHOICES = {
    "POWERTOOLS_TRACE_DISABLED": (None, "true", "false", "1"),
    "LAMBDA_TASK_ROOT": (None, "/var/task"),
    "AWS_SAM_LOCAL": (None, "true"),
    "AWS_CHALICE_CLI_MODE": (None, "true"),
}


@pytest.mark.parametrize("values", list(itertools.product(*CHOICES.values())))
def test_the_tracing_rule_is_powertools_own(
    values: tuple[str | None, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an environment of the variables Powertools' Tracer reads
    for name, value in zip(CHOICES, values, strict=True):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    # When meterbridge's rule and Powertools' are asked
    ours = sdk_tracing_enabled()
    theirs = not Tracer._is_tracer_disabled()
    # Then they agree
    assert ours == theirs


def test_with_tracing_off_the_handler_is_not_wrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given tracing off, as in tests and wherever POWERTOOLS_TRACE_DISABLED is true
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    tracer = HandlerTracer()

    def handler(event: dict, context: object) -> dict:
        return event

    # When a handler is decorated and an annotation is made
    captured = tracer.capture_lambda_handler(handler)
    tracer.annotate_if_active("tenant_id", "t_1")
    # Then the handler is itself (no Powertools wrapper around disabled SDK calls), no Tracer
    assert captured is handler
    assert tracer.install() is None
    assert tracer.active is False


def test_a_lazy_module_loads_on_first_use_and_takes_its_place() -> None:
    # Given a module namespace binding a declared lazy module
    namespace: dict[str, object] = {}
    namespace["exceptions"] = lazy.LazyLoader("exceptions", namespace, "botocore.exceptions")
    stand_in = namespace["exceptions"]
    # When an attribute is read
    client_error = stand_in.ClientError  # type: ignore[attr-defined]
    # Then the real module was imported and bound in place of the stand-in
    assert isinstance(namespace["exceptions"], types.ModuleType)
    assert namespace["exceptions"] is not stand_in
    assert client_error is namespace["exceptions"].ClientError  # type: ignore[attr-defined]


def test_only_declared_modules_can_be_lazy() -> None:
    # Given a module name not in LAZY_MODULES
    # When a LazyLoader is made for it
    # Then it is refused, so the declared list stays the whole list
    with pytest.raises(ValueError, match="LAZY_MODULES"):
        lazy.LazyLoader("json", {}, "json")
