"""Builders for Stripe webhook tests: fixture events, real signatures, Function URL events."""

from __future__ import annotations

import base64
import copy
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import stripe

from meterbridge.dal import dynamo, outbox, tenant_state
from meterbridge.logic import auth
from meterbridge.models.cloudevent import STRIPE_SOURCE
from meterbridge.settings import get_settings
from meterbridge_dev.fakes.stripe_fake import sign_payload
from meterbridge_dev.stack import lambda_runtime
from tests.support.builders import make_tenant
from tests.support.fixtures import reset_singletons

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "events" / f"stripe-{stripe.api_version}"
NEW_SECRET = "whsec_test_new_0123456789abcdef"
OLD_SECRET = "whsec_test_old_fedcba9876543210"
FIXTURE_TENANT = "t_0123456789abcdef"


def stripe_event(
    name: str,
    *,
    customer: str,
    tenant_id: str | None = None,
    created: int | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """The fixture ``name`` with a fresh id, our customer and (optionally) tenant metadata."""
    event = json.loads((FIXTURES / f"{name}.json").read_text())
    text = json.dumps(event).replace("cus_RkB2mXJ9dQ4sTz", customer)
    text = text.replace(FIXTURE_TENANT, tenant_id or "")
    event = json.loads(text)
    if tenant_id is None:
        _strip_tenant(event)
    event["id"] = event_id or "evt_" + uuid.uuid4().hex
    event["created"] = created if created is not None else int(time.time())
    return event


def _strip_tenant(node: Any) -> None:
    if isinstance(node, dict):
        metadata = node.get("metadata")
        if isinstance(metadata, dict):
            metadata.pop("tenant_id", None)
        if node.get("client_reference_id") == "":
            node["client_reference_id"] = None
        for value in node.values():
            _strip_tenant(value)
    elif isinstance(node, list):
        for value in node:
            _strip_tenant(value)


def body_of(event: dict[str, Any]) -> bytes:
    # Stripe sends pretty-printed JSON; the signature covers these exact bytes.
    return json.dumps(event, indent=2).encode()


def function_url_event(body: bytes, signature: str | None, *, b64: bool = False) -> dict[str, Any]:
    """A Lambda Function URL event (from events/) carrying ``body`` and the signature header."""
    event = json.loads((ROOT / "events" / "functionurl-stripe-webhook.json").read_text())
    event = copy.deepcopy(event)
    if signature is None:
        event["headers"].pop("stripe-signature", None)
    else:
        event["headers"]["stripe-signature"] = signature
    event["body"] = base64.b64encode(body).decode() if b64 else body.decode()
    event["isBase64Encoded"] = b64
    return event


def deliver(
    event: dict[str, Any] | bytes,
    *,
    secret: str = NEW_SECRET,
    timestamp: int | None = None,
    b64: bool = False,
) -> tuple[int, dict[str, Any]]:
    """Sign ``event`` with Stripe's scheme and invoke the webhook Lambda in-process."""
    body = event if isinstance(event, bytes) else body_of(event)
    signature = sign_payload(body, secret, timestamp)
    return invoke(function_url_event(body, signature, b64=b64))


def invoke(lambda_event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = lambda_runtime.invoke("stripe_webhook", lambda_event, timeout_s=15.0)
    return response["statusCode"], json.loads(response["body"])


def scan_all(tables: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Every item of every table (for 'nothing was written' assertions)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name in tables.values():
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": name, "ConsistentRead": True}
        while True:
            page = dynamo.client().scan(**kwargs)
            items += [dynamo.deserialize(i) for i in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        out[name] = sorted(items, key=lambda i: (i["pk"], i["sk"]))
    return out


@pytest.fixture
def webhook_env(aws: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", f"{NEW_SECRET},{OLD_SECRET}")
    reset_singletons()
    auth.forget()
    return aws


def linked_tenant(plan: str = "free", customer: str | None = None) -> tuple[str, str, str]:
    """A tenant linked to a Stripe customer: (tenant_id, raw_key, customer_id)."""
    tenant_id, raw_key = make_tenant(plan=plan)
    customer = customer or "cus_" + tenant_id.removeprefix("t_")
    tenant_state.link_customer(get_settings().tenants_table, tenant_id, customer)
    return tenant_id, raw_key, customer


def profile(tenant_id: str) -> dict[str, Any]:
    found = tenant_state.get_profile(get_settings().tenants_table, tenant_id)
    assert found is not None
    return found


def outbox_item(event_id: str) -> dict[str, Any] | None:
    from meterbridge.dal import dynamo

    return dynamo.get(
        get_settings().events_table,
        {"pk": outbox.event_pk(STRIPE_SOURCE, event_id), "sk": outbox.EVENT_SK},
    )
