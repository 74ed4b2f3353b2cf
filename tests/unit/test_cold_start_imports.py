"""What the HTTP handlers import at a cold start (issue 2, docs/performance/cold_start.md).

Each handler module is imported in a fresh interpreter, as ``bench.cold_start`` and the Lambda
runtime do, and the modules it loaded are checked: the contract is that a handler does not load
what its requests never use. The figures themselves are in the bench, not here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.exceptions import PydanticV1NotSupportedError

import meterbridge.api  # noqa: F401 - installs the v1 probe, as every API module does
from meterbridge.api import fastapi_v1_probe
from meterbridge.models.usage import INBOUND_EVENT_SCHEMA, InboundEvent

ROOT = Path(__file__).resolve().parents[2]
HANDLERS = {
    "usage_api": ROOT / "functions/usage_api/app.py",
    "tenant_admin": ROOT / "functions/tenant_admin/app.py",
}

# Loaded by neither FastAPI handler at import: clients of other functions (Stripe is imported
# by tenant provisioning where it runs), the SDKs the first request loads (boto3, X-Ray), the
# local stack and CLI, the streaming service, and pydantic.v1, which FastAPI imports only to
# refuse v1 models (meterbridge.api.fastapi_v1_probe).
NEVER_AT_IMPORT = (
    "pydantic.v1",
    "stripe",
    "httpx",
    "nats",
    "boto3",
    "botocore.client",
    "aws_xray_sdk",
    "rich",
    "typer",
    "meterbridge_dev",
    "meterbridge_streaming",
    "meterbridge.logic.flush",
    "meterbridge.adapters.openmeter",
)
# The usage API authenticates keys but never builds the admin API's tenant models.
USAGE_API_NEVER = ("meterbridge.models.tenant", "meterbridge.logic.tenants")
# The admin API loads Stripe's gateway, the plan catalogue and the NATS publisher in the
# lifecycle routes that use them, not at import.
TENANT_ADMIN_NEVER = (
    "meterbridge.adapters.stripe_billing",
    "meterbridge.plans",
    "meterbridge.bus.publisher",
)

PROBE = r"""
import gc, importlib.util, json, sys
spec = importlib.util.spec_from_file_location("handler_under_test", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
at_import = sorted(sys.modules)
status = None
if len(sys.argv) > 2:
    class Context:
        function_name = "meterbridge-cold-start"
        function_version = "$LATEST"
        memory_limit_in_mb = 512
        aws_request_id = "cold-start-test"
        invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:cold-start"

        def get_remaining_time_in_millis(self):
            return 30000

    event = json.loads(open(sys.argv[2]).read())
    event["headers"].pop("authorization", None)
    status = module.lambda_handler(event, Context())["statusCode"]
print(json.dumps({
    "at_import": at_import,
    "after_request": sorted(sys.modules),
    "status": status,
    "gc_enabled": gc.isenabled(),
    "gc_frozen": gc.get_freeze_count(),
    "gc_young": gc.get_count()[0],
}))
"""


def _load(handler: str, event: str | None = None) -> dict[str, Any]:
    """Import a handler in a fresh interpreter (and answer one request); the modules loaded."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "shared"),
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "Meterbridge",
        "METERBRIDGE_ADMIN_AUTH": "iam",
    }
    args = [sys.executable, "-c", PROBE, str(HANDLERS[handler])]
    if event is not None:
        args.append(str(ROOT / "events" / event))
    out = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _loaded(modules: list[str], names: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == n or m.startswith(n + ".") for n in names)]


@pytest.mark.parametrize("handler", sorted(HANDLERS))
def test_handler_import_loads_no_module_its_requests_do_not_use(handler: str) -> None:
    # Given a FastAPI handler module, imported in a fresh interpreter as Lambda does
    loaded = _load(handler)["at_import"]
    # When its modules are listed
    never = NEVER_AT_IMPORT + (USAGE_API_NEVER if handler == "usage_api" else TENANT_ADMIN_NEVER)
    # Then none of the heavy ones its requests do not use is among them
    assert _loaded(loaded, never) == []
    # And FastAPI is there: the app and its routes are built at import, not at first request
    assert "fastapi" in loaded


@pytest.mark.parametrize("handler", sorted(HANDLERS))
def test_handler_import_leaves_the_garbage_collector_on_with_init_objects_frozen(
    handler: str,
) -> None:
    # Given a handler imported in a fresh interpreter (its init runs without the cyclic GC)
    result = _load(handler)
    # When the collector's state is read after the import
    # Then it is on again, and the objects built at init are frozen rather than left young,
    # so no collection after init rescans them (the work is not moved to the first request)
    assert result["gc_enabled"] is True
    assert result["gc_frozen"] > 10_000
    assert result["gc_young"] < 700


@pytest.mark.parametrize(
    ("handler", "event"),
    [("usage_api", "apigw-usage-get-usage.json"), ("tenant_admin", "apigw-admin-unsigned.json")],
)
def test_first_request_does_not_load_pydantic_v1_either(handler: str, event: str) -> None:
    # Given a handler imported in a fresh interpreter
    # When it answers its first request (no credentials: a 401 without any I/O)
    result = _load(handler, event)
    # Then the request was served and pydantic.v1 was not merely moved to it
    assert result["status"] == 401
    assert _loaded(result["after_request"], ("pydantic.v1",)) == []


def test_the_v1_probe_is_installed_on_the_pinned_fastapi() -> None:
    # Given the FastAPI version pinned in pyproject.toml
    # When the probe is installed again (idempotent)
    installed = fastapi_v1_probe.install()
    # Then it found FastAPI's v1 checks (if not, an upgrade moved them: re-check the cold start,
    # and drop meterbridge.api.fastapi_v1_probe if FastAPI no longer imports pydantic.v1)
    assert installed is True


def test_a_pydantic_v1_model_is_still_refused_as_fastapi_refuses_it() -> None:
    # Given a pydantic v1 model, which imports pydantic.v1
    from pydantic import v1

    class Legacy(v1.BaseModel):
        name: str

    app = FastAPI()
    # When it is used as a route's response model
    # Then FastAPI refuses it as it does without the probe
    with pytest.raises(PydanticV1NotSupportedError):

        @app.get("/legacy", response_model=Legacy)
        async def legacy() -> dict[str, str]:
            return {"name": "x"}


def test_a_pydantic_v2_model_is_not_taken_for_a_v1_model() -> None:
    # Given FastAPI's probes after meterbridge.api installed its wrapper
    from fastapi._compat import shared

    # When a v2 model, a plain type and an instance are checked
    answers = (
        shared.is_pydantic_v1_model_class(InboundEvent),
        shared.is_pydantic_v1_model_class(dict),
        shared.is_pydantic_v1_model_instance(InboundEvent(id="e1", type="api_call")),
    )
    # Then none is a v1 model
    assert answers == (False, False, False)


def test_the_written_out_inbound_event_schema_is_the_models_schema() -> None:
    # Given the JSON schema written out for the OpenAPI document (not built at import)
    # When pydantic builds the model's schema
    built = InboundEvent.model_json_schema()
    # Then they are the same, key for key
    assert json.dumps(INBOUND_EVENT_SCHEMA, sort_keys=True) == json.dumps(built, sort_keys=True)
