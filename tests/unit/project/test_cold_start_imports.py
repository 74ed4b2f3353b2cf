"""What the HTTP handlers import at a cold start (issue 2, docs/performance/cold_start.md).

Each handler module is imported in a fresh interpreter, as ``bench.cold_start`` and the Lambda
runtime do, and the modules it loaded are checked: the contract is that a handler does not load
what its requests never use. The figures themselves are in the bench, not here.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.exceptions import PydanticV1NotSupportedError

from meterbridge.models.usage import INBOUND_EVENT_SCHEMA, InboundEvent
from meterbridge.runtime import fastapi_probe
from meterbridge.runtime.lazy import LAZY_MODULES

ROOT = Path(__file__).resolve().parents[3]
LAYER = ROOT / "shared/meterbridge"
HANDLERS = {
    "usage_api": ROOT / "functions/usage_api/app.py",
    "tenant_admin": ROOT / "functions/tenant_admin/app.py",
}

# Loaded by neither FastAPI handler at import: clients of other functions (Stripe is imported
# by tenant provisioning where it runs), the SDKs the first request loads (boto3, X-Ray), the
# local stack and CLI, the streaming service, and pydantic.v1, which FastAPI imports only to
# refuse v1 models (meterbridge.runtime.fastapi_probe).
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

# Modules that still import inside a function body, each for a reason a declared lazy module
# cannot serve (meterbridge.runtime.lazy: no FastAPI handler's init may load a lazy module).
# No other module of the layer may import inside a function.
PENDING_DEFERRED_IMPORTS = {
    "dal/keys.py": "KeyRecord (models.tenant): the admin API's init model, not the usage API's",
    "dal/tenants.py": "Tenant (models.tenant): the admin API's init model, not the usage API's",
    "models/tenant.py": "the plan check's catalogue: the usage API's init, not the admin API's",
}
# Modules pydantic or FastAPI would evaluate annotation strings of at import, that still have
# ``from __future__ import annotations`` (logic/, being restructured): pending, as above.
PENDING_FUTURE_ANNOTATIONS = frozenset(
    {
        "logic/deadletters.py",
        "logic/flush.py",
        "logic/status.py",
        "logic/stripe_reconcile.py",
        "logic/stripe_translate.py",
        "logic/stripe_webhook.py",
    }
)
PYDANTIC_BASES = {"BaseModel", "BaseSettings", "RootModel"}

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
after_request = sorted(sys.modules)
from meterbridge.dal import dynamo
dynamo.client()  # built, not called: no network
print(json.dumps({
    "at_import": at_import,
    "after_request": after_request,
    "after_client": sorted(sys.modules),
    "status": status,
    "gc_enabled": gc.isenabled(),
    "gc_frozen": gc.get_freeze_count(),
    "gc_young": gc.get_count()[0],
}))
"""


def _load(handler: str, event: str | None = None, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """Import a handler in a fresh interpreter (and answer one request); the modules loaded."""
    env = {
        **{k: v for k, v in os.environ.items() if k not in drop},
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
    if drop:
        return {"returncode": out.returncode, "stderr": out.stderr}
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
    # And no module declared lazy (meterbridge.runtime.lazy) was loaded by the init
    assert _loaded(loaded, tuple(LAZY_MODULES)) == []


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


@pytest.mark.parametrize("handler", sorted(HANDLERS))
def test_the_dynamodb_client_is_built_without_boto3_or_the_xray_sdk(handler: str) -> None:
    # Given a handler imported and invoked in a fresh interpreter, X-Ray SDK tracing off
    result = _load(handler, "apigw-usage-get-usage.json")
    # When its DynamoDB client is built
    loaded = result["after_client"]
    # Then botocore is there, and neither boto3's resource layer and s3transfer (which loads
    # multiprocessing) nor the X-Ray SDK was imported on the way
    assert "botocore.client" in loaded
    assert _loaded(loaded, ("boto3", "s3transfer", "multiprocessing", "aws_xray_sdk")) == []


def test_a_missing_table_variable_fails_the_init_naming_it() -> None:
    # Given the usage API's environment without TENANTS_TABLE
    # When the handler module is loaded
    result = _load("usage_api", drop=("TENANTS_TABLE",))
    # Then its init fails, and the error names the variable
    assert result["returncode"] != 0
    assert "TENANTS_TABLE" in result["stderr"]


def _function_imports(path: Path) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines += [
                n.lineno for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom)
            ]
    return lines


def test_no_module_imports_inside_a_function_but_the_pending_ones() -> None:
    # Given every module of the layer
    modules = {str(p.relative_to(LAYER)): p for p in sorted(LAYER.rglob("*.py"))}
    # When the imports inside function bodies are listed
    found = {name: lines for name, p in modules.items() if (lines := _function_imports(p))}
    # Then only the pending modules have any: a module loaded on first use is declared in
    # meterbridge.runtime.lazy.LAZY_MODULES and bound at module level instead
    assert sorted(set(found) - PENDING_DEFERRED_IMPORTS.keys()) == []
    assert len(LAZY_MODULES) <= 15


def _evaluated_by_pydantic_or_fastapi(tree: ast.Module, name: str) -> bool:
    if name.startswith("api/"):
        return True  # routes and dependencies: FastAPI reads their signatures at import
    return any(
        isinstance(n, ast.ClassDef)
        and any(getattr(b, "id", getattr(b, "attr", "")) in PYDANTIC_BASES for b in n.bases)
        for n in ast.walk(tree)
    )


def test_no_pydantic_or_fastapi_module_has_future_annotations() -> None:
    # Given the layer's modules whose annotations pydantic or FastAPI evaluate at import
    # (docs/performance/cold_start.md, "Rules": with the future import each annotation is a
    # string that is compiled and evaluated when the class or route is built)
    found = []
    for path in sorted(LAYER.rglob("*.py")):
        name = str(path.relative_to(LAYER))
        tree = ast.parse(path.read_text(encoding="utf-8"))
        future = any(
            isinstance(n, ast.ImportFrom)
            and n.module == "__future__"
            and any(a.name == "annotations" for a in n.names)
            for n in tree.body
        )
        # When the future import is looked for
        if future and _evaluated_by_pydantic_or_fastapi(tree, name):
            found.append(name)
    # Then none but the pending ones has it
    assert sorted(set(found) - PENDING_FUTURE_ANNOTATIONS) == []


def test_the_v1_probe_is_installed_on_the_pinned_fastapi() -> None:
    # Given the FastAPI version pinned in pyproject.toml
    # When the probe is installed again (idempotent)
    installed = fastapi_probe.install()
    # Then it found FastAPI's v1 checks (if not, an upgrade moved them: re-check the cold start,
    # and drop meterbridge.runtime.fastapi_probe if FastAPI no longer imports pydantic.v1)
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
    # Given FastAPI's probes after a handler's init installed the wrapper
    from fastapi._compat import shared

    fastapi_probe.install()

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
