"""The tenant_admin Lambda handler with API Gateway HTTP API (v2) events: IAM-authorized
requests are served; a request without the IAM authorizer context gets a 401."""

from __future__ import annotations

import json
from typing import Any

import pytest

from meterbridge_dev.stack.lambda_runtime import invoke
from tests.support import tenants as helpers
from tests.support.fixtures import load_event, reset_singletons
from tests.support.tenants import FakeStripe

# Fixtures shared with the other tenant tests (pytest finds them by these names).
fake_stripe = helpers.fake_stripe


@pytest.fixture
def iam_mode(aws: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METERBRIDGE_ADMIN_AUTH", "iam")
    reset_singletons()


def test_iam_authorized_event_provisions_a_tenant_through_the_handler(
    iam_mode: None, fake_stripe: FakeStripe
) -> None:
    # Given the IAM-signed create event API Gateway would deliver
    event: dict[str, Any] = load_event("apigw-admin-create-tenant")

    # When the handler runs it, twice (a client retry with the same Idempotency-Key)
    first = invoke("tenant_admin", event)
    second = invoke("tenant_admin", event)
    listing = invoke("tenant_admin", load_event("apigw-admin-list-tenants"))

    # Then one tenant exists, the secret was in the first answer only
    assert first["statusCode"] == 201, first["body"]
    assert second["statusCode"] == 200
    created, replayed = json.loads(first["body"]), json.loads(second["body"])
    assert created["api_key"]["secret"].startswith("mb_test_")
    assert "secret" not in replayed["api_key"]
    assert replayed["tenant"]["tenant_id"] == created["tenant"]["tenant_id"]
    assert len(fake_stripe.state.customers()) == 1
    assert listing["statusCode"] == 200
    items = json.loads(listing["body"])["items"]
    assert [t["tenant_id"] for t in items] == [created["tenant"]["tenant_id"]]


def test_unsigned_event_gets_401_through_the_handler(iam_mode: None) -> None:
    # Given an event without API Gateway's IAM authorizer context
    event = load_event("apigw-admin-unsigned")

    # When the handler runs it
    resp = invoke("tenant_admin", event)

    # Then 401 with the error body
    assert resp["statusCode"] == 401
    assert json.loads(resp["body"])["error"]["code"] == "unauthorized"


def test_a_bearer_token_is_not_enough_in_iam_mode(
    iam_mode: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given IAM mode, even with an admin token configured and presented
    monkeypatch.setenv("METERBRIDGE_ADMIN_TOKEN", "tok")
    reset_singletons()
    event = load_event("apigw-admin-unsigned")
    event["headers"]["authorization"] = "Bearer tok"

    # When the handler runs it
    resp = invoke("tenant_admin", event)

    # Then 401: only API Gateway's IAM context authorizes
    assert resp["statusCode"] == 401
