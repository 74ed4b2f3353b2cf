"""template.yaml's IAM against what the code really sends to DynamoDB.

Each function's flows run for real (the usage API, the admin API, the webhook and flush
handlers against moto, nats-server, the OpenMeter sink and the fake Stripe API) while a
botocore hook records every DynamoDB request. Each request is then authorized the way IAM does
it for DynamoDB (a transaction item by item; ``dynamodb:LeadingKeys`` = the partition key,
``dynamodb:Attributes`` = the attributes the request names, ``dynamodb:ReturnValues``) against
the statements template.yaml gives that function. A request no statement allows would be an
AccessDenied on AWS: the test fails with it. tests/unit/project/test_template_iam.py holds the other
direction (no grant beyond what the code writes).
"""

from __future__ import annotations

import copy
import fnmatch
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from meterbridge.dal import dynamo, tenant_state
from meterbridge.dal import usage as usage_dal
from meterbridge.logic import auth
from meterbridge.logic.periods import bounds
from meterbridge.runtime import aws as aws_runtime
from meterbridge.settings import get_settings
from meterbridge_dev.stack import lambda_runtime
from meterbridge_dev.stack.tables import load_template
from tests.support import flush as flush_support
from tests.support import tenants as tenant_support
from tests.support.builders import make_tenant
from tests.support.fixtures import reset_singletons
from tests.support.flush import fill_outbox, make_events, trim_stream_before
from tests.support.tenants import ADMIN_TOKEN, AUTH
from tests.support.webhooks import NEW_SECRET, deliver, stripe_event

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = load_template(ROOT / "template.yaml")

sink = flush_support.sink  # the OpenMeter fake fixture
fake_stripe = tenant_support.fake_stripe

# What SAM's DynamoDB policy templates expand to (so an older template can be judged too).
SAM_TEMPLATES = {
    "DynamoDBCrudPolicy": [
        "GetItem",
        "DeleteItem",
        "PutItem",
        "Scan",
        "Query",
        "UpdateItem",
        "BatchWriteItem",
        "BatchGetItem",
        "DescribeTable",
        "ConditionCheckItem",
    ],
    "DynamoDBReadPolicy": ["GetItem", "Scan", "Query", "BatchGetItem", "DescribeTable"],
    "DynamoDBWritePolicy": ["PutItem", "UpdateItem", "BatchWriteItem"],
}
_FUNCTIONS = {
    "attribute_exists",
    "attribute_not_exists",
    "attribute_type",
    "begins_with",
    "contains",
    "size",
    "if_not_exists",
    "list_append",
}
_KEYWORDS = {"SET", "ADD", "REMOVE", "DELETE", "AND", "OR", "NOT", "BETWEEN", "IN"}


# -- recording -------------------------------------------------------------------------------


_KEY_QUERY = re.compile(r"^pk = (:\w+)$")


@dataclass
class Request:
    """One authorization IAM makes: action, table (logical id), index, partition keys..."""

    function: str
    action: str
    table: str
    index: str | None = None
    leading_keys: list[str] | None = None
    attributes: set[str] = field(default_factory=set)
    return_values: str | None = None


class Recorder:
    def __init__(self, physical_to_logical: dict[str, str]) -> None:
        self.tables = physical_to_logical
        self.function: str | None = None
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if self.function is not None:
            self.calls.append((self.function, model.name, copy.deepcopy(params)))

    @contextmanager
    def acting_as(self, function: str) -> Iterator[None]:
        self.function = function
        try:
            yield
        finally:
            self.function = None

    def requests(self) -> list[Request]:
        return [r for f, op, p in self.calls for r in self._requests(f, op, p)]

    def _requests(self, function: str, op: str, p: dict[str, Any]) -> Iterator[Request]:
        if op == "TransactWriteItems":
            kinds = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem"}
            kinds["ConditionCheck"] = "ConditionCheckItem"
            for item in p["TransactItems"]:
                ((kind, body),) = item.items()
                yield self._item(function, kinds[kind], body)
        elif op in ("BatchGetItem", "BatchWriteItem"):
            for table, spec in p["RequestItems"].items():
                if op == "BatchGetItem":
                    keys = spec["Keys"]
                else:
                    keys = [
                        (r.get("PutRequest") or {}).get("Item") or r["DeleteRequest"]["Key"]
                        for r in spec
                    ]
                yield Request(function, op, self.tables[table], None, [k["pk"]["S"] for k in keys])
        elif op in ("GetItem", "PutItem", "UpdateItem", "DeleteItem"):
            yield self._item(function, op, p)
        elif (
            op == "Query"
            and not p.get("IndexName")
            and _KEY_QUERY.match(p.get("KeyConditionExpression", ""))
        ):
            # IAM evaluates dynamodb:LeadingKeys on a Query by its partition key value.
            placeholder = _KEY_QUERY.match(p["KeyConditionExpression"]).group(1)  # type: ignore[union-attr]
            value = p["ExpressionAttributeValues"][placeholder]["S"]
            yield Request(function, op, self.tables[p["TableName"]], None, [value])
        else:  # Query, Scan, DescribeTable: the table or index as a whole
            yield Request(function, op, self.tables[p["TableName"]], p.get("IndexName"))

    def _item(self, function: str, action: str, body: dict[str, Any]) -> Request:
        key = body.get("Key") or body["Item"]
        names = body.get("ExpressionAttributeNames") or {}
        attributes = set(body["Item"]) if "Item" in body else {"pk", "sk"}
        for expression in ("UpdateExpression", "ConditionExpression", "ProjectionExpression"):
            attributes |= names_in(body.get(expression) or "", names)
        return Request(
            function,
            action,
            self.tables[body["TableName"]],
            None,
            [key["pk"]["S"]],
            attributes,
            body.get("ReturnValues"),
        )


def names_in(expression: str, names: dict[str, str]) -> set[str]:
    """Top-level attribute names an expression uses (placeholders resolved)."""
    found: set[str] = set()
    for token in re.findall(r"[#:]?[A-Za-z_][A-Za-z0-9_]*", expression):
        if token.startswith(":"):
            continue
        if token.startswith("#"):
            found.add(names[token])
        elif token not in _FUNCTIONS and token.upper() not in _KEYWORDS:
            found.add(token)
    return found


# -- authorizing -----------------------------------------------------------------------------


def function_statements(template: dict[str, Any], function: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for policy in template["Resources"][function]["Properties"].get("Policies", []):
        if not isinstance(policy, dict):
            continue
        found.extend(policy.get("Statement", []))
        for name, args in policy.items():
            if name in SAM_TEMPLATES:
                table = args["TableName"]["Ref"]
                found.append(
                    {
                        "Effect": "Allow",
                        "Action": [f"dynamodb:{a}" for a in SAM_TEMPLATES[name]],
                        "Resource": [
                            {"Fn::GetAtt": [table, "Arn"]},
                            {"Fn::Sub": "${" + table + ".Arn}/index/*"},
                        ],
                    }
                )
    return found


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def resource_matches(resource: Any, request: Request) -> bool:
    if isinstance(resource, dict) and "Fn::GetAtt" in resource:
        return request.index is None and resource["Fn::GetAtt"][0] == request.table
    if isinstance(resource, dict) and "Fn::Sub" in resource:
        match = re.fullmatch(r"\$\{(\w+)\.Arn\}/index/(.+)", str(resource["Fn::Sub"]))
        return bool(
            match
            and request.index is not None
            and match.group(1) == request.table
            and fnmatch.fnmatchcase(request.index, match.group(2))
        )
    return False


def condition_holds(condition: dict[str, Any], request: Request) -> bool:
    for operator, tests in condition.items():
        for key, allowed in tests.items():
            allowed = set(as_list(allowed))
            if (operator, key) == ("ForAllValues:StringLike", "dynamodb:LeadingKeys"):
                if request.leading_keys is None:
                    return False  # a query: judged by its own statement, not an item grant
                if not all(
                    any(fnmatch.fnmatchcase(pk, p) for p in allowed) for pk in request.leading_keys
                ):
                    return False
            elif (operator, key) == ("ForAllValues:StringEquals", "dynamodb:Attributes"):
                if not request.attributes <= allowed:
                    return False
            elif (operator, key) == ("StringEqualsIfExists", "dynamodb:ReturnValues"):
                if request.return_values is not None and request.return_values not in allowed:
                    return False
            else:
                raise AssertionError(f"condition this test cannot evaluate: {operator} {key}")
    return True


def allowed(statements: list[dict[str, Any]], request: Request) -> bool:
    for statement in statements:
        if statement.get("Effect") != "Allow":
            continue
        if f"dynamodb:{request.action}" not in as_list(statement["Action"]):
            continue
        if not any(resource_matches(r, request) for r in as_list(statement["Resource"])):
            continue
        if condition_holds(statement.get("Condition") or {}, request):
            return True
    return False


def denied(template: dict[str, Any], requests: list[Request]) -> list[Request]:
    cache: dict[str, list[dict[str, Any]]] = {}
    out = []
    for request in requests:
        statements = cache.setdefault(
            request.function, function_statements(template, request.function)
        )
        if not allowed(statements, request):
            out.append(request)
    return out


# -- the flows -------------------------------------------------------------------------------


@pytest.fixture(name="recorded")
def recorded_fixture(
    aws: dict[str, str],
    nats_server: Any,
    sink: Any,
    fake_stripe: Any,
    moto_server: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Recorder]:
    """Every function's flows, run once with every DynamoDB request recorded."""
    monkeypatch.setenv("METERBRIDGE_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", NEW_SECRET)
    reset_singletons()
    auth.forget()
    recorder = Recorder({physical: logical for logical, physical in aws.items()})
    # Clients made from now on inherit the session's handlers; the current one gets it too.
    # The DAL's clients come from botocore's session in meterbridge.runtime.aws (no boto3).
    aws_runtime.session().register("before-parameter-build.dynamodb", recorder)
    dynamo.reset_clients()
    settings = get_settings()

    # The usage API: a free-plan tenant sends 85 queries (crossing the 80% threshold of its
    # 100), other events and value-meter events, reads its usage; NATS is on, so markers are
    # cleared.
    tenant_id, key = make_tenant(plan="free")
    from meterbridge.api.usage import create_app as usage_app

    events = [{"id": f"q-{i}", "type": "query", "data": {}} for i in range(85)]
    events += [{"id": "e-1", "type": "page.view", "data": {}}, {"id": "c-1", "type": "api.call"}]
    # Value meters too: a SUM by model, a UNIQUE_COUNT's markers (one user twice), a MAX.
    events += [
        {
            "id": f"l-{i}",
            "type": "llm.completion",
            "data": {"tokens": 10 + i, "model": "m", "user_id": "u-1"},
        }
        for i in range(2)
    ]
    events += [{"id": "s-1", "type": "storage.reported", "data": {"gb": 0.5}}]
    with TestClient(usage_app()) as http, recorder.acting_as("UsageApiFunction"):
        bearer = {"Authorization": f"Bearer {key}"}
        assert http.post("/v1/events", json=events, headers=bearer).status_code == 202
        assert http.get("/v1/usage", headers=bearer).status_code == 200

    # The flush: 20 events, one of them poison (dead-lettered), through the Lambda handler.
    state, _ = sink
    outbox_events = make_events(20, tenant=tenant_id, prefix=f"fl-{uuid.uuid4().hex[:6]}")
    fill_outbox(settings.events_table, outbox_events, tenant=tenant_id)
    state.poison(outbox_events[4].id)
    with recorder.acting_as("OpenMeterFlushFunction"):
        result = lambda_runtime.invoke("openmeter_flush", lambda_runtime.scheduled_event())
    assert result["dead_lettered"] >= 1, result
    # ... and a day without a flush: the stream trimmed past its checkpoint, and the next run
    # reads the gap back from the event records (a Scan, docs/flush.md).
    gap = make_events(3, tenant=tenant_id, prefix=f"gap-{uuid.uuid4().hex[:6]}")
    kept = make_events(2, tenant=tenant_id, prefix=f"kept-{uuid.uuid4().hex[:6]}")
    fill_outbox(settings.events_table, gap, tenant=tenant_id)
    fill_outbox(settings.events_table, kept, tenant=tenant_id)
    trim_stream_before(moto_server.url, settings.events_table, {(e.source, e.id) for e in kept})
    with recorder.acting_as("OpenMeterFlushFunction"):
        result = lambda_runtime.invoke("openmeter_flush", lambda_runtime.scheduled_event())
    assert result["recovered"] >= len(gap) and result["recovering"] == 0, result

    # The admin API: a tenant's whole life, and the dead letter retried.
    from meterbridge.api.admin import create_app as admin_app

    with TestClient(admin_app()) as admin, recorder.acting_as("TenantAdminFunction"):
        idem = {**AUTH, "Idempotency-Key": f"iam-{uuid.uuid4()}"}
        created = admin.post("/admin/tenants", json=tenant_support.body(), headers=idem)
        assert created.status_code == 201, created.text
        tid = created.json()["tenant"]["tenant_id"]
        kid = admin.post(f"/admin/tenants/{tid}/keys", headers=AUTH).json()["key_id"]
        assert admin.get(f"/admin/tenants/{tid}/keys", headers=AUTH).status_code == 200
        assert admin.post(f"/admin/tenants/{tid}/keys/{kid}/rotate", headers=AUTH).is_success
        assert admin.post(f"/admin/tenants/{tid}/keys/{kid}/revoke", headers=AUTH).is_success
        assert admin.patch(f"/admin/tenants/{tid}", json={"plan": "pro"}, headers=AUTH).is_success
        assert admin.post(f"/admin/tenants/{tid}/suspend", headers=AUTH).is_success
        assert admin.post(f"/admin/tenants/{tid}/resume", headers=AUTH).is_success
        assert admin.get("/admin/tenants", headers=AUTH).status_code == 200
        assert admin.get(f"/admin/tenants/{tid}", headers=AUTH).status_code == 200
        listed = admin.get("/admin/deadletters", headers=AUTH)
        assert listed.status_code == 200 and listed.json()["items"], listed.text
        retried = admin.post("/admin/deadletters/retry", json={"all": True}, headers=AUTH)
        assert retried.status_code == 200 and retried.json()["retried"], retried.text
        assert admin.delete(f"/admin/tenants/{tid}", headers=AUTH).is_success
        reconciled = admin.get("/admin/billing/reconcile?period=2026-01", headers=AUTH)
        assert reconciled.status_code == 200, reconciled.text

    # The webhook: a linked tenant's subscription starts, then a payment fails.
    linked, _ = make_tenant(plan="basic")
    customer = "cus_" + linked.removeprefix("t_")
    tenant_state.link_customer(settings.tenants_table, linked, customer)
    with recorder.acting_as("StripeWebhookFunction"):
        for name in ("customer.subscription.created", "invoice.payment_failed"):
            status, outcome = deliver(stripe_event(name, customer=customer))
            assert status == 200 and outcome["outcome"] == "applied", outcome
    # ... and its cycle invoice closes a period with overage (the billing records).
    billed, _ = make_tenant(plan="basic")
    stripe_customer = fake_stripe.state.handle(
        "POST", "/v1/customers", {"name": billed}, {"authorization": "Bearer sk_test_meterbridge"}
    )[1]["id"]
    tenant_state.link_customer(settings.tenants_table, billed, stripe_customer)
    period_start, period_end = (int(t.timestamp()) for t in bounds("2026-01"))
    dynamo.update(
        settings.usage_table,
        usage_dal.counter_key(billed, "2026-01", "queries", 0),
        set_="ADD used :n",
        vals={":n": 1005},
    )
    _, created_event = fake_stripe.state.add_draft_invoice(
        stripe_customer, period_start, period_end
    )
    with recorder.acting_as("StripeWebhookFunction"):
        status, outcome = deliver(created_event)
        assert status == 200 and outcome["outcome"] == "applied", outcome
    yield recorder
    aws_runtime.session().unregister("before-parameter-build.dynamodb", recorder)
    dynamo.reset_clients()


def test_every_request_the_code_sends_is_allowed_by_the_template(recorded: Recorder) -> None:
    # Given every DynamoDB request each function's flows sent
    requests = recorded.requests()
    writes = {r.function for r in requests if r.action.endswith("Item") and r.leading_keys}

    # When each is authorized against template.yaml
    refused = denied(TEMPLATE, requests)

    # Then every function did write, and IAM would have allowed all of it
    assert writes == {
        "UsageApiFunction",
        "OpenMeterFlushFunction",
        "TenantAdminFunction",
        "StripeWebhookFunction",
    }
    assert refused == []


def test_the_evaluator_refuses_what_the_grants_do_not_cover(recorded: Recorder) -> None:
    # Given the usage API's recorded requests, and its counter grant narrowed to `used` only
    requests = [r for r in recorded.requests() if r.function == "UsageApiFunction"]
    narrowed = copy.deepcopy(TEMPLATE)
    policies = narrowed["Resources"]["UsageApiFunction"]["Properties"]["Policies"]
    for policy in policies:
        for statement in policy.get("Statement", []) if isinstance(policy, dict) else []:
            if statement.get("Sid") == "UsageCount":
                statement["Condition"]["ForAllValues:StringEquals"]["dynamodb:Attributes"] = [
                    "pk",
                    "sk",
                    "used",
                ]

    # When they are authorized against it
    refused = denied(narrowed, requests)

    # Then the rate-window updates (which set count and expires_at) and the value-meter cells
    # (group, LATEST's t and eid) are refused: the check is as narrow as the grant
    assert refused
    assert {(r.table, r.action) for r in refused} == {("UsageTable", "UpdateItem")}
    firsts = {r.leading_keys[0].split("#")[0] for r in refused if r.leading_keys}
    assert "RATE" in firsts and any(f.startswith("t_") for f in firsts)
