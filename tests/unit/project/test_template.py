"""template.yaml held together with the code it deploys and the documents that describe it.

Each test reads the template as plain data (short tags in their long form) and checks one
promise: handlers resolve, settings the code reads are set, IAM stays scoped to named tables
and parameters, routes carry the right auth, tables match docs/data-model.md.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from meterbridge.settings import Settings, get_settings
from meterbridge_dev.stack.tables import create_tables, load_template, table_specs

ROOT = Path(__file__).resolve().parents[3]
TEMPLATE_PATH = ROOT / "template.yaml"
TEMPLATE = load_template(TEMPLATE_PATH)
RESOURCES: dict[str, dict[str, Any]] = TEMPLATE["Resources"]
PARAMETERS: dict[str, dict[str, Any]] = TEMPLATE["Parameters"]
GLOBAL_FUNCTION: dict[str, Any] = TEMPLATE.get("Globals", {}).get("Function", {})

FUNCTIONS = sorted(
    lid for lid, res in RESOURCES.items() if res["Type"] == "AWS::Serverless::Function"
)
TABLES = sorted(lid for lid, res in RESOURCES.items() if res["Type"] == "AWS::DynamoDB::Table")

# What each function needs from meterbridge.settings.Settings (field names; the env var names
# come from the fields' aliases, so a renamed variable fails here and not in production).
COMMON_FIELDS = (
    "tenants_table",
    "events_table",
    "usage_table",
    "idempotency_table",
    "powertools_service_name",
    "powertools_metrics_namespace",
    "log_level",
    "nats_enabled",
    "nats_servers",
)
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "UsageApiFunction": (*COMMON_FIELDS, "key_environment"),
    "TenantAdminFunction": (*COMMON_FIELDS, "admin_auth", "key_environment", "stripe_api_base"),
    "StripeWebhookFunction": (*COMMON_FIELDS, "stripe_api_base"),
    "OpenMeterFlushFunction": (*COMMON_FIELDS, "openmeter_enabled", "openmeter_base_url"),
}
# Secrets reach a function as the NAME of an SSM SecureString (CloudFormation cannot put
# a SecureString into a Lambda environment); the code fetches the value with Powertools.
SECRET_PARAMETERS: dict[str, tuple[str, ...]] = {
    "UsageApiFunction": (),
    "TenantAdminFunction": ("STRIPE_API_KEY_PARAMETER",),
    "StripeWebhookFunction": ("STRIPE_API_KEY_PARAMETER", "STRIPE_WEBHOOK_SECRET_PARAMETER"),
    "OpenMeterFlushFunction": ("OPENMETER_API_KEY_PARAMETER",),
}
# The tables each function may touch, and no others.
TABLE_ACCESS: dict[str, set[str]] = {
    "UsageApiFunction": {"TenantsTable", "EventsTable", "UsageTable"},
    "TenantAdminFunction": {"TenantsTable", "EventsTable", "UsageTable"},
    "StripeWebhookFunction": {"TenantsTable", "EventsTable", "IdempotencyTable", "UsageTable"},
    "OpenMeterFlushFunction": {"EventsTable", "IdempotencyTable"},
}
DYNAMODB_POLICY_TEMPLATES = {
    "DynamoDBCrudPolicy",
    "DynamoDBReadPolicy",
    "DynamoDBWritePolicy",
    "DynamoDBReconfigurePolicy",
    "DynamoDBStreamReadPolicy",
    "DynamoDBBackupFullAccessPolicy",
    "DynamoDBRestoreFromBackupPolicy",
}


# -- helpers ---------------------------------------------------------------------------------


def props(logical_id: str) -> dict[str, Any]:
    return RESOURCES[logical_id].get("Properties", {})


def effective(logical_id: str, key: str) -> Any:
    """A function property as deployed: its own value, else the Globals one."""
    return props(logical_id).get(key, GLOBAL_FUNCTION.get(key))


def function_env(logical_id: str) -> dict[str, Any]:
    merged = dict(GLOBAL_FUNCTION.get("Environment", {}).get("Variables", {}))
    merged.update(props(logical_id).get("Environment", {}).get("Variables", {}))
    return merged


def function_dir(logical_id: str) -> Path:
    return ROOT / str(props(logical_id)["CodeUri"]).rstrip("/")


def settings_aliases() -> dict[str, str]:
    return {str(f.alias): name for name, f in Settings.model_fields.items() if f.alias}


def statements(logical_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for policy in props(logical_id).get("Policies", []):
        if isinstance(policy, dict) and "Statement" in policy:
            found.extend(policy["Statement"])
    return found


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def referenced_names(value: Any) -> set[str]:
    """Logical ids and parameters an intrinsic refers to (Ref, GetAtt, ${...} in Sub)."""
    if isinstance(value, dict):
        if "Ref" in value:
            return {value["Ref"]}
        if "Fn::GetAtt" in value:
            return {value["Fn::GetAtt"][0]}
        if "Fn::Sub" in value:
            text = value["Fn::Sub"] if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"][0]
            return {m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", text)} - {
                "AWS::Partition",
                "AWS::Region",
                "AWS::AccountId",
                "AWS::URLSuffix",
            }
        return set().union(*(referenced_names(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(referenced_names(v) for v in value)) if value else set()
    return set()


def http_events(logical_id: str) -> dict[str, dict[str, Any]]:
    return {
        name: event["Properties"]
        for name, event in (props(logical_id).get("Events") or {}).items()
        if event["Type"] == "HttpApi"
    }


def data_model_indexes() -> dict[str, dict[str, tuple[str, str | None]]]:
    """The index table of docs/data-model.md: {table: {index: (partition key, sort key)}}."""
    indexes: dict[str, dict[str, tuple[str, str | None]]] = {}
    row = re.compile(r"^\|\s*(\w+Table)\s*\|\s*`(\w+)`\s*\|\s*`(\w+)` \(S\)\s*\|\s*(.+?)\s*\|")
    for line in (ROOT / "docs" / "data-model.md").read_text(encoding="utf-8").splitlines():
        match = row.match(line)
        if match:
            table, index, pk, sk_cell = match.groups()
            sk = re.match(r"`(\w+)` \(S\)", sk_cell)
            indexes.setdefault(table, {})[index] = (pk, sk.group(1) if sk else None)
    return indexes


# -- functions and code ----------------------------------------------------------------------


def test_template_declares_the_four_functions() -> None:
    # Given the functions the design names
    expected = set(REQUIRED_FIELDS)

    # When the template is read
    declared = set(FUNCTIONS)

    # Then it declares exactly those
    assert declared == expected


@pytest.mark.parametrize("logical_id", FUNCTIONS)
def test_handler_resolves_to_callable(logical_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the function's code directory and the literal settings Lambda would give it
    module_name, _, attribute = str(props(logical_id)["Handler"]).rpartition(".")
    path = function_dir(logical_id) / f"{module_name.replace('.', '/')}.py"
    assert path.is_file(), f"{logical_id}: {path.relative_to(ROOT)} does not exist"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name, value in function_env(logical_id).items():
        if isinstance(value, str):
            monkeypatch.setenv(name, value)
    monkeypatch.syspath_prepend(str(function_dir(logical_id)))
    get_settings.cache_clear()

    # When the handler module is imported the way the runtime does
    unique = f"_handler_{logical_id}"
    spec = importlib.util.spec_from_file_location(unique, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, unique, module)
    try:
        spec.loader.exec_module(module)
    finally:
        get_settings.cache_clear()

    # Then it exposes a callable handler
    assert callable(getattr(module, attribute, None)), f"{path.name} has no callable {attribute}"


@pytest.mark.parametrize("logical_id", [lid for lid in FUNCTIONS if not http_events(lid)])
def test_non_http_handlers_do_not_import_fastapi(logical_id: str) -> None:
    # Given a function no HTTP API route points at
    path = function_dir(logical_id) / "app.py"
    if not path.is_file():
        pytest.fail(f"{path.relative_to(ROOT)} does not exist")
    probe = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('app', {str(path)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "print('fastapi' in sys.modules)\n"
    )
    env = {
        **os.environ,
        "AWS_DEFAULT_REGION": "us-east-1",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "shared"), str(path.parent)]),
    }

    # When its handler is imported in a fresh interpreter
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120
    )

    # Then FastAPI stays out of its cold start
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"


@pytest.mark.parametrize("logical_id", FUNCTIONS)
def test_function_runs_python312_on_arm64_with_the_shared_layer(logical_id: str) -> None:
    # Given the function merged with Globals
    # When its runtime, architecture and layers are read
    runtime = effective(logical_id, "Runtime")
    architectures = effective(logical_id, "Architectures")
    layers = effective(logical_id, "Layers") or []

    # Then it is python3.12 on arm64 and uses the shared layer, whose build matches
    assert runtime == "python3.12"
    assert architectures == ["arm64"]
    assert {"Ref": "SharedLayer"} in layers
    layer = RESOURCES["SharedLayer"]
    assert layer["Properties"]["ContentUri"].rstrip("/") == "shared"
    assert "python3.12" in layer["Properties"]["CompatibleRuntimes"]
    assert "arm64" in layer["Properties"]["CompatibleArchitectures"]
    assert layer["Metadata"]["BuildMethod"] == "python3.12"


@pytest.mark.parametrize("logical_id", FUNCTIONS)
def test_settings_the_function_needs_are_set(logical_id: str) -> None:
    # Given the env var names Settings reads for what this function does
    aliases = settings_aliases()
    missing_fields = [f for f in REQUIRED_FIELDS[logical_id] if f not in Settings.model_fields]
    assert not missing_fields, f"Settings has no field(s) {missing_fields}"
    required = {str(Settings.model_fields[f].alias) for f in REQUIRED_FIELDS[logical_id]}
    unread = [name for name in SECRET_PARAMETERS[logical_id] if name not in aliases]
    assert not unread, f"Settings reads no {unread}: the code cannot find its secrets"
    required |= set(SECRET_PARAMETERS[logical_id])

    # When the function's environment is merged with Globals
    env = function_env(logical_id)

    # Then every one of them is set
    assert sorted(required - set(env)) == []


def test_every_template_variable_is_one_the_code_reads() -> None:
    # Given the names Settings reads (Powertools reads POWERTOOLS_* itself)
    aliases = settings_aliases()
    names: dict[str, str] = {}
    for logical_id in FUNCTIONS:
        names.update({name: logical_id for name in function_env(logical_id)})
    for container in props("StreamingTaskDefinition")["ContainerDefinitions"]:
        if isinstance(container, dict) and container.get("Name") == "streaming":
            names.update({e["Name"]: "streaming" for e in container.get("Environment", [])})

    # When each variable set in the template is looked up
    unknown = {
        n: where
        for n, where in names.items()
        if n not in aliases and not n.startswith("POWERTOOLS_")
    }

    # Then none is a typo or a setting the code no longer has
    assert unknown == {}


@pytest.mark.parametrize("logical_id", FUNCTIONS)
def test_secret_parameters_are_granted_exactly(logical_id: str) -> None:
    # Given the SSM parameter names the function receives
    env = function_env(logical_id)
    given = {name: value for name, value in env.items() if name.endswith("_PARAMETER")}
    for name, value in list(given.items()):
        if isinstance(value, dict) and "Fn::If" in value:
            # Only under a condition (the NATS password: when functions publish), else empty.
            _, value, otherwise = value["Fn::If"]
            assert otherwise == "", name
            given[name] = value
        assert isinstance(value, dict) and value.get("Ref") in PARAMETERS, name
    wanted = {value["Ref"] for value in given.values()}

    # When its IAM statements are read
    ssm = [
        s
        for s in statements(logical_id)
        if any(str(a).startswith("ssm:") for a in as_list(s["Action"]))
    ]
    granted = set().union(*(referenced_names(s["Resource"]) for s in ssm)) if ssm else set()
    kms = [s for s in statements(logical_id) if "kms:Decrypt" in as_list(s["Action"])]

    # Then it may read exactly those parameters, only with GetParameter, and decrypt via SSM
    assert granted == wanted
    for statement in ssm:
        assert as_list(statement["Action"]) == ["ssm:GetParameter"]
        assert "*" not in as_list(statement["Resource"])
    if wanted:
        assert kms and all("kms:ViaService" in str(s.get("Condition")) for s in kms)
    else:
        assert not kms
    for parameter in wanted:
        assert PARAMETERS[parameter]["AllowedPattern"].startswith("^/"), parameter


@pytest.mark.parametrize("logical_id", FUNCTIONS)
def test_dynamodb_access_is_scoped_to_the_tables_it_needs(logical_id: str) -> None:
    # Given the function's policies
    policies = props(logical_id).get("Policies", [])
    touched: set[str] = set()

    # When every DynamoDB grant is collected
    for policy in policies:
        assert not (isinstance(policy, str) and "dynamodb" in policy.lower()), policy
        if not isinstance(policy, dict):
            continue
        for name, args in policy.items():
            if name in DYNAMODB_POLICY_TEMPLATES:
                table = args["TableName"]
                assert isinstance(table, dict) and table.get("Ref") in TABLES, (name, table)
                touched.add(table["Ref"])
    for statement in statements(logical_id):
        actions = as_list(statement["Action"])
        if not any(str(a).startswith("dynamodb:") for a in actions):
            continue
        assert "dynamodb:*" not in actions
        resources = as_list(statement["Resource"])
        assert "*" not in resources, statement
        names = referenced_names(resources)
        assert names and names <= set(TABLES), statement
        touched |= names

    # Then it reaches exactly the tables it needs, each a table of this template
    assert touched == TABLE_ACCESS[logical_id]


@pytest.mark.parametrize("logical_id", FUNCTIONS)
def test_function_logs_to_its_own_retained_log_group(logical_id: str) -> None:
    # Given the function's logging configuration
    group = (props(logical_id).get("LoggingConfig") or {}).get("LogGroup")

    # When the log group it names is looked up
    assert isinstance(group, dict) and "Ref" in group, f"{logical_id} has no LoggingConfig.LogGroup"
    resource = RESOURCES[group["Ref"]]

    # Then it is a log group with the stack's retention, and no other function shares it
    assert resource["Type"] == "AWS::Logs::LogGroup"
    assert resource["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    others = [
        f
        for f in FUNCTIONS
        if f != logical_id and (props(f).get("LoggingConfig") or {}).get("LogGroup") == group
    ]
    assert others == []


# -- entry points ----------------------------------------------------------------------------


def test_admin_routes_use_iam_and_tenant_routes_do_not() -> None:
    # Given every HTTP API route
    routes = [(lid, e) for lid in FUNCTIONS for e in http_events(lid).values()]

    # When their authorizers are read
    admin = [e for _, e in routes if str(e["Path"]).startswith("/admin")]
    tenant = [e for _, e in routes if not str(e["Path"]).startswith("/admin")]

    # Then admin routes require SigV4 and tenant routes leave auth to the API key
    assert admin and all(e.get("Auth", {}).get("Authorizer") == "AWS_IAM" for e in admin)
    assert tenant and all(e.get("Auth", {}).get("Authorizer", "NONE") == "NONE" for e in tenant)
    assert props("HttpApi")["Auth"]["EnableIamAuthorizer"] is True
    assert "DefaultAuthorizer" not in props("HttpApi")["Auth"]
    assert {("POST", "/v1/events"), ("GET", "/v1/usage")} <= {
        (e["Method"], e["Path"]) for lid, e in routes if lid == "UsageApiFunction"
    }
    assert {e["Path"] for lid, e in routes if lid == "TenantAdminFunction"} == {"/admin/{proxy+}"}


def test_stripe_webhook_is_a_function_url() -> None:
    # Given the webhook function
    webhook = props("StripeWebhookFunction")

    # When its entry points are read
    url = webhook.get("FunctionUrlConfig") or {}

    # Then Stripe reaches it through a Function URL (the signature is the auth), not the API
    assert url.get("AuthType") == "NONE"
    assert http_events("StripeWebhookFunction") == {}
    assert TEMPLATE["Outputs"]["StripeWebhookUrl"]["Value"] == {
        "Fn::GetAtt": ["StripeWebhookFunctionUrl", "FunctionUrl"]
    }


def test_flush_runs_every_minute() -> None:
    # Given the flush function
    events = props("OpenMeterFlushFunction").get("Events") or {}

    # When its schedules are read
    schedules = [e["Properties"]["Schedule"] for e in events.values() if e["Type"] == "Schedule"]

    # Then EventBridge invokes it every minute, with a timeout longer than the tick
    assert schedules == ["rate(1 minute)"]
    assert effective("OpenMeterFlushFunction", "Timeout") == 120


def test_outputs_name_every_entry_point() -> None:
    # Given the outputs an operator reads after deploy
    outputs = TEMPLATE["Outputs"]

    # When their names are listed
    names = set(outputs)

    # Then the API, the webhook, the stream, the tables and the layer are there
    assert {
        "HttpApiUrl",
        "StripeWebhookUrl",
        "StreamEndpoint",
        "SharedLayerArn",
        *(f"{t}Name" for t in TABLES),
    } <= names


# -- tables ----------------------------------------------------------------------------------


def test_tables_are_those_of_the_data_model() -> None:
    # Given the tables docs/data-model.md names
    documented = set(
        re.findall(r"`(\w+Table)` \(`[A-Z_]+`\)", (ROOT / "docs" / "data-model.md").read_text())
    )

    # When the template's tables are listed
    declared = set(TABLES)

    # Then they are the same four
    assert (
        documented == declared == {"TenantsTable", "EventsTable", "UsageTable", "IdempotencyTable"}
    )


@pytest.mark.parametrize("logical_id", TABLES)
def test_table_is_on_demand_recoverable_expiring_and_retained(logical_id: str) -> None:
    # Given a table
    resource = RESOURCES[logical_id]
    table = resource["Properties"]

    # When its settings are read
    ttl = table["TimeToLiveSpecification"]

    # Then it matches the data model's promises
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert ttl == {"AttributeName": "expires_at", "Enabled": True}
    assert table["SSESpecification"]["SSEEnabled"] is True
    assert resource["DeletionPolicy"] == resource["UpdateReplacePolicy"] == "Retain"
    assert table["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]


@pytest.mark.parametrize("logical_id", TABLES)
def test_table_indexes_match_the_data_model(logical_id: str) -> None:
    # Given the indexes docs/data-model.md lists for this table
    documented = data_model_indexes().get(logical_id, {})
    table = props(logical_id)
    types = {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}

    # When the template's indexes are read
    declared: dict[str, tuple[str, str | None]] = {}
    for index in table.get("GlobalSecondaryIndexes", []):
        keys = {k["KeyType"]: k["AttributeName"] for k in index["KeySchema"]}
        declared[index["IndexName"]] = (keys["HASH"], keys.get("RANGE"))
        assert index["Projection"] == {"ProjectionType": "ALL"}

    # Then they are the same, every key attribute is a declared string, and none is unused
    assert declared == documented
    used = {"pk", "sk"} | {k for keys in declared.values() for k in keys if k}
    assert set(types) == used
    assert set(types.values()) == {"S"}


def test_table_specs_create_tables_that_moto_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the create_table kwargs built from the template, and an in-process moto
    import boto3
    from moto import mock_aws

    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    specs = table_specs(TEMPLATE_PATH)
    names = {lid: f"spec-{lid.lower()}" for lid in specs}

    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")

        # When every table is created from them
        created = create_tables(client, names, TEMPLATE_PATH)

        # Then each exists with the template's indexes and TTL on expires_at
        assert sorted(created) == sorted(names.values())
        for lid, name in names.items():
            described = client.describe_table(TableName=name)["Table"]
            indexes = {i["IndexName"] for i in described.get("GlobalSecondaryIndexes", [])}
            assert indexes == set(data_model_indexes().get(lid, {}))
            assert described["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
            ttl = client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
            assert ttl["AttributeName"] == "expires_at"
            assert ttl["TimeToLiveStatus"] == "ENABLED"


def test_test_helper_reexports_the_table_builder() -> None:
    # Given the tests' helper module, loaded from its file
    spec = importlib.util.spec_from_file_location(
        "_template_tables", ROOT / "tests" / "template_tables.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)

    # When it is imported
    spec.loader.exec_module(module)

    # Then it hands out the same functions the local stack uses
    assert module.table_specs is table_specs
    assert module.create_tables is create_tables


def test_unknown_logical_id_is_refused() -> None:
    # Given a name mapping with a table the template does not declare
    names = {"NoSuchTable": "x"}

    # When tables are created from it
    # Then the mistake is reported before any call to DynamoDB
    with pytest.raises(KeyError, match="NoSuchTable"):
        create_tables(object(), names, TEMPLATE_PATH)  # type: ignore[arg-type]


# -- streaming on ECS --------------------------------------------------------------------------


def test_streaming_task_runs_arm64_with_health_check_and_logs() -> None:
    # Given the streaming task definition
    task = props("StreamingTaskDefinition")

    # When its streaming container is found
    containers = [
        c
        for c in task["ContainerDefinitions"]
        if isinstance(c, dict) and c.get("Name") == "streaming"
    ]
    assert len(containers) == 1
    streaming = containers[0]
    env = {e["Name"]: e["Value"] for e in streaming["Environment"]}

    # Then it is a Fargate arm64 task serving 8080, checked on /health/live, logging with retention
    assert task["RuntimePlatform"]["CpuArchitecture"] == "ARM64"
    assert task["RequiresCompatibilities"] == ["FARGATE"]
    assert streaming["Image"] == {"Ref": "StreamingImageUri"}
    assert [p["ContainerPort"] for p in streaming["PortMappings"]] == [8080]
    assert "/health/live" in " ".join(streaming["HealthCheck"]["Command"])
    assert streaming["StopTimeout"] == 30
    assert streaming["LogConfiguration"]["LogDriver"] == "awslogs"
    group = streaming["LogConfiguration"]["Options"]["awslogs-group"]["Ref"]
    assert RESOURCES[group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    assert {
        "TENANTS_TABLE",
        "EVENTS_TABLE",
        "USAGE_TABLE",
        "IDEMPOTENCY_TABLE",
        "NATS_SERVERS",
    } <= set(env)
    assert env["NATS_SERVERS"] == {
        "Fn::If": ["UseNatsSidecar", "nats://127.0.0.1:4222", {"Ref": "NatsServers"}]
    }


def test_nats_sidecar_only_without_external_servers() -> None:
    # Given the task's containers and conditions
    containers = props("StreamingTaskDefinition")["ContainerDefinitions"]
    conditional = [c for c in containers if isinstance(c, dict) and "Fn::If" in c]

    # When the conditional container is read
    assert len(conditional) == 1
    condition, sidecar, otherwise = conditional[0]["Fn::If"]

    # Then it is a JetStream nats sidecar, present only when NatsServers is empty
    assert TEMPLATE["Conditions"][condition] == {"Fn::Equals": [{"Ref": "NatsServers"}, ""]}
    assert sidecar["Name"] == "nats"
    assert sidecar["Image"] == "nats:2.10-alpine"
    assert "jetstream" in " ".join(sidecar["Command"])
    assert otherwise == {"Ref": "AWS::NoValue"}


def test_streaming_task_role_only_reads_tenants_and_usage() -> None:
    # Given the streaming task role
    policies = props("StreamingTaskRole")["Policies"]

    # When its statements are collected
    grants = [s for p in policies for s in p["PolicyDocument"]["Statement"]]
    actions = {a for s in grants for a in as_list(s["Action"])}

    # Then it only reads: items of the tenants and usage tables, and describes the rest
    assert actions and all(
        a.split(":")[1].startswith(("Get", "BatchGet", "Query", "Describe")) for a in actions
    )
    item_reads = [s for s in grants if set(as_list(s["Action"])) != {"dynamodb:DescribeTable"}]
    assert referenced_names([r for s in item_reads for r in as_list(s["Resource"])]) == {
        "TenantsTable",
        "UsageTable",
    }


def test_streaming_service_rolls_back_failed_deployments() -> None:
    # Given the streaming service
    service = props("StreamingService")

    # When its deployment configuration is read
    breaker = service["DeploymentConfiguration"]["DeploymentCircuitBreaker"]

    # Then a failed deployment rolls back, and it runs only when its inputs are given
    assert breaker == {"Enable": True, "Rollback": True}
    assert RESOURCES["StreamingService"]["Condition"] == "DeployStreaming"
    assert service["DesiredCount"] == {"Ref": "StreamingDesiredCount"}


# -- configuration files ---------------------------------------------------------------------


def test_samconfig_environments_override_known_parameters() -> None:
    # Given samconfig.toml
    config = tomllib.loads((ROOT / "samconfig.toml").read_text(encoding="utf-8"))
    stacks = {
        "default": "meterbridge",
        "staging": "meterbridge-staging",
        "prod": "meterbridge-prod",
    }
    environment_of = {"default": "dev", "staging": "staging", "prod": "prod"}

    # When each environment's deploy settings are read
    for env, stack in stacks.items():
        deploy = config[env]["deploy"]["parameters"]
        overrides = dict(pair.split("=", 1) for pair in deploy["parameter_overrides"].split())

        # Then it has its own stack, a known Environment, and overrides only real parameters
        assert config[env]["global"]["parameters"]["stack_name"] == stack
        assert overrides["Environment"] == environment_of[env]
        assert set(overrides) <= set(PARAMETERS)
        assert deploy["capabilities"] == "CAPABILITY_IAM"
        assert deploy["resolve_s3"] is True and deploy["confirm_changeset"] is True
        assert config[env]["build"]["parameters"] == {"cached": True, "parallel": True}
    assert config["version"] == 0.1
    assert config["default"]["validate"]["parameters"]["lint"] is True


def test_layer_requirements_pin_the_runtime_dependencies() -> None:
    # Given the project's runtime dependencies
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    expected = set(pyproject["project"]["dependencies"])

    # When the layer's requirements are read
    lines = (ROOT / "shared" / "requirements.txt").read_text(encoding="utf-8").splitlines()
    pinned = {line.strip() for line in lines if line.strip() and not line.startswith("#")}

    # Then SAM installs exactly those, each pinned
    assert pinned == expected
    assert all("==" in requirement for requirement in pinned)
    # ... and no server or Prometheus client: those are the streaming service's
    assert not {r for r in pinned if r.startswith(("uvicorn", "prometheus-client"))}


def test_streaming_requirements_pin_the_streaming_extra() -> None:
    # Given the streaming service's extra in pyproject.toml
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    expected = set(pyproject["project"]["optional-dependencies"]["streaming"])

    # When the service's requirements are read
    path = ROOT / "services" / "streaming" / "requirements.txt"
    lines = path.read_text(encoding="utf-8").splitlines()
    pinned = {line.strip() for line in lines if line.strip() and not line.startswith("#")}

    # Then the image installs exactly those, each pinned, uvicorn and prometheus-client among them
    assert pinned == expected
    assert {r.split("==")[0] for r in pinned} >= {"uvicorn", "prometheus-client"}
