"""The usage_api Lambda handler with API Gateway HTTP API (v2) events, against the moto server:
the events in ``events/`` with a real tenant key in their Authorization header."""

from __future__ import annotations

import json
from typing import Any

from meterbridge.dal import dynamo
from meterbridge_dev.stack.lambda_runtime import invoke
from tests.support.builders import event_records, make_tenant
from tests.support.fixtures import load_event


def _with_key(name: str, key: str) -> dict[str, Any]:
    event = load_event(name)
    event["headers"]["authorization"] = f"Bearer {key}"
    return event


def test_post_events_through_the_handler_is_accepted_and_stored(aws: dict[str, str]) -> None:
    # Given a tenant and the POST /v1/events event carrying its key (a batch of two events)
    tenant, key = make_tenant("basic")
    event = _with_key("apigw-usage-post-events", key)

    # When the handler runs it, then runs it again (a client retry)
    first = invoke("usage_api", event)
    retry = invoke("usage_api", event)

    # Then 202 with both accepted, the retry reports both as duplicates, two items stored
    assert first["statusCode"] == 202, first["body"]
    assert json.loads(first["body"]) == {"accepted": 2, "duplicates": 0}
    assert retry["statusCode"] == 202
    assert json.loads(retry["body"]) == {"accepted": 0, "duplicates": 2}
    items = event_records(aws["EventsTable"])
    assert sorted(i["tenant_id"] for i in items) == [tenant, tenant]


def test_get_usage_through_the_handler_reports_the_ingested_events(aws: dict[str, str]) -> None:
    # Given a tenant that ingested the two events of the POST fixture
    _, key = make_tenant("basic")
    assert invoke("usage_api", _with_key("apigw-usage-post-events", key))["statusCode"] == 202

    # When the GET /v1/usage event runs through the handler
    resp = invoke("usage_api", _with_key("apigw-usage-get-usage", key))

    # Then 200 with this period's api_calls at 2
    assert resp["statusCode"] == 200, resp["body"]
    report = json.loads(resp["body"])
    meters = {m["meter"]: m for m in report["current"]["meters"]}
    assert meters["api_calls"]["used"] == 2
    assert report["current"]["plan"] == "basic"


def test_the_fixture_placeholder_key_is_refused(aws: dict[str, str]) -> None:
    # Given the POST fixture as checked in (its placeholder key belongs to no tenant)
    event = load_event("apigw-usage-post-events")

    # When the handler runs it
    resp = invoke("usage_api", event)

    # Then 401 with the error body, and nothing stored
    assert resp["statusCode"] == 401
    assert json.loads(resp["body"])["error"]["code"] == "unauthorized"
    assert dynamo.client().scan(TableName=aws["EventsTable"])["Items"] == []
