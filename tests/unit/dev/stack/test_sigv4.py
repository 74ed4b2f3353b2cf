"""The local SigV4 check refuses what API Gateway's IAM authorizer refuses (issue 17)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from meterbridge_dev.stack.sigv4 import AllowedCredential, SigV4Rejected, verify

AKID, SECRET = "AKIALOCALUNITTEST", "unit-test-secret"
ALLOWED = {AKID: AllowedCredential(AKID, SECRET, "arn:aws:iam::123456789012:user/op")}
URL = "http://127.0.0.1:8105/admin/tenants?limit=5&status=active"


def signed(
    body: bytes = b'{"name": "Acme"}', region: str = "us-east-1", secret: str = SECRET
) -> dict[str, str]:
    request = AWSRequest(
        method="POST", url=URL, data=body, headers={"content-type": "application/json"}
    )
    SigV4Auth(Credentials(AKID, secret), "execute-api", region).add_auth(request)
    return {**dict(request.headers.items()), "host": "127.0.0.1:8105"}


def check(headers: dict[str, str], body: bytes = b'{"name": "Acme"}', **kw) -> AllowedCredential:
    return verify(
        method="POST",
        url=URL,
        headers=headers,
        body=body,
        allowed=ALLOWED,
        region="us-east-1",
        **kw,
    )


def test_a_request_signed_by_botocore_passes() -> None:
    assert check(signed()).arn == "arn:aws:iam::123456789012:user/op"


@pytest.mark.parametrize(
    ("headers", "body", "now", "message"),
    [
        ({}, b'{"name": "Acme"}', None, "Missing Authentication Token"),
        ("tampered", b'{"name": "Evil"}', None, "signature we calculated does not match"),
        ("wrong-secret", b'{"name": "Acme"}', None, "signature we calculated does not match"),
        ("eu-region", b'{"name": "Acme"}', None, "valid region"),
        ("signed", b'{"name": "Acme"}', timedelta(minutes=6), "Signature expired"),
    ],
)
def test_what_api_gateway_refuses_is_refused(headers, body, now, message) -> None:
    # Given a request broken in one way
    chosen = (
        {
            "tampered": signed(),
            "wrong-secret": signed(secret="other"),
            "eu-region": signed(region="eu-west-1"),
            "signed": signed(),
        }.get(headers, headers)
        if isinstance(headers, str)
        else headers
    )
    when = datetime.now(UTC) + now if now else None

    # When it is verified / Then it is refused with API Gateway's reason
    with pytest.raises(SigV4Rejected, match=message):
        check(chosen, body=body, now=when)


def test_an_unknown_access_key_is_refused() -> None:
    headers = signed()
    headers["Authorization"] = headers["Authorization"].replace(AKID, "AKIANOTINTHELIST")
    with pytest.raises(SigV4Rejected, match="security token included in the request is invalid"):
        check(headers)
