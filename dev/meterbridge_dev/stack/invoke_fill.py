"""Fill the placeholders of an ``events/`` sample at invoke time, as the real caller would.

- ``Bearer mb_test_REPLACE_WITH_A_TENANT_KEY``: a fresh key of the local demo tenant ("Invoke
  demo", provisioned once with a fixed Idempotency-Key, so repeated invokes reuse it).
- ``Stripe-Signature``: a fresh signature of the body with the stack's webhook secret (the
  first of ``STRIPE_WEBHOOK_SECRET``), timestamp now, Stripe's v1 scheme.
- A SigV4 ``Authorization`` header without an ``authorizer.iam`` context: the IAM context API
  Gateway adds once it has verified the signature. An event without a signature (the unsigned
  sample) gets none and is refused by the function itself, as on AWS.
- A bare Stripe event (``"object": "event"``, as in ``events/stripe-*/``) is wrapped in the
  Function URL event the webhook receives.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from typing import Any

from meterbridge_dev.stack.lambda_runtime import load_event, repo_root

KEY_PLACEHOLDER = "REPLACE_WITH_A_TENANT_KEY"
DEMO_IDEMPOTENCY_KEY = "meterbridge-invoke-demo-tenant"
_SIGV4_KEY = re.compile(r"Credential=([A-Z0-9]+)/")


def demo_key() -> str:
    """A new key of the demo tenant (provisioned on first use)."""
    from meterbridge.logic.keys import lifecycle as keys
    from meterbridge.logic.tenants.provisioning import provision_sync
    from meterbridge.models.tenant import TenantCreate

    result, _ = provision_sync(
        TenantCreate(name="Invoke demo", email="invoke-demo@example.com", plan="basic"),
        DEMO_IDEMPOTENCY_KEY,
    )
    return keys.issue(result.tenant.tenant_id).secret


def _body_bytes(event: dict[str, Any]) -> bytes:
    body = event.get("body") or ""
    return base64.b64decode(body) if event.get("isBase64Encoded") else str(body).encode()


def wrap_stripe_event(payload: dict[str, Any]) -> dict[str, Any]:
    event = load_event(repo_root() / "events" / "functionurl-stripe-webhook.json")
    event["body"] = json.dumps(payload, indent=2)
    event["isBase64Encoded"] = False
    return event


def fill(event: dict[str, Any], webhook_secret: str | None) -> dict[str, Any]:
    """A copy of ``event`` with its placeholders filled."""
    from meterbridge_dev.fakes.stripe_fake import sign_payload

    if event.get("object") == "event" and "type" in event:
        event = wrap_stripe_event(event)
    event = copy.deepcopy(event)
    headers: dict[str, str] = event.setdefault("headers", {})
    auth = headers.get("authorization", "")
    if KEY_PLACEHOLDER in auth:
        headers["authorization"] = f"Bearer {demo_key()}"
    if "stripe-signature" in headers:
        if not webhook_secret:
            raise ValueError("STRIPE_WEBHOOK_SECRET is not set: cannot sign the webhook sample")
        headers["stripe-signature"] = sign_payload(_body_bytes(event), webhook_secret)
    context = event.get("requestContext") or {}
    match = _SIGV4_KEY.search(auth)
    if (
        auth.startswith("AWS4-HMAC-SHA256")
        and match
        and "iam" not in (context.get("authorizer") or {})
    ):
        akid = match.group(1)
        context.setdefault("authorizer", {})["iam"] = {
            "accessKey": akid,
            "accountId": context.get("accountId", "000000000000"),
            "callerId": akid,
            "cognitoIdentity": None,
            "principalOrgId": None,
            "userArn": f"arn:aws:iam::{context.get('accountId', '000000000000')}:user/operator",
            "userId": akid,
        }
        event["requestContext"] = context
    return event
