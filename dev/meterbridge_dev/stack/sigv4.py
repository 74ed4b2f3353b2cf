"""SigV4 verification for the local stack's admin routes, as API Gateway's IAM authorizer does it.

``meterbridge dev --admin-auth iam`` checks every ``/admin/*`` request: the ``Authorization``
header's form, the credential scope (date of ``X-Amz-Date``, the stack's region,
``execute-api``, ``aws4_request``), the clock (5 minutes either way, as API Gateway), that the
access key is in the local list of allowed credentials, and the signature, recomputed with
botocore's signer over the signed headers, the path, the query and the body. A request that
passes gets the IAM identity in its Lambda-style request context, so the admin API's
``METERBRIDGE_ADMIN_AUTH=iam`` path is the one that runs on AWS.

The allowed list is a JSON file: ``[{"access_key_id", "secret_access_key", "arn"?}]``.
Failures are 403 with API Gateway's ``{"message": ...}`` body.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

MAX_SKEW = timedelta(minutes=5)
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<cred>[^,\s]+)\s*,\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+)\s*,\s*Signature=(?P<sig>[0-9a-f]{64})\s*$"
)


class SigV4Rejected(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class AllowedCredential:
    access_key_id: str
    secret_access_key: str
    arn: str


def load_credentials(path: Path) -> dict[str, AllowedCredential]:
    rows = json.loads(path.read_text())
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON list of credentials")
    allowed = {}
    for row in rows:
        akid = str(row["access_key_id"])
        arn = str(row.get("arn") or f"arn:aws:iam::000000000000:user/{akid}")
        allowed[akid] = AllowedCredential(akid, str(row["secret_access_key"]), arn)
    return allowed


def generate_credentials(path: Path) -> dict[str, AllowedCredential]:
    """Write a fresh local credential pair to ``path`` (mode 600) and return the list."""
    akid = "AKIALOCAL" + secrets.token_hex(6).upper()
    row = {
        "access_key_id": akid,
        "secret_access_key": secrets.token_urlsafe(30),
        "arn": "arn:aws:iam::000000000000:user/local-operator",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([row], indent=2))
    path.chmod(0o600)
    return load_credentials(path)


def verify(
    *,
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    allowed: dict[str, AllowedCredential],
    region: str,
    now: datetime | None = None,
) -> AllowedCredential:
    """The caller's credential if the request is signed as API Gateway requires; else raise."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    lower = {k.lower(): v for k, v in headers.items()}
    header = lower.get("authorization", "")
    if not header:
        raise SigV4Rejected("Missing Authentication Token")
    match = _AUTH.match(header)
    if match is None:
        raise SigV4Rejected(
            "Authorization header requires AWS4-HMAC-SHA256 Credential, SignedHeaders and Signature"
        )
    parts = match["cred"].split("/")
    if len(parts) != 5:
        raise SigV4Rejected("Credential should be scoped to a valid region, service and date")
    akid, scope_date, scope_region, service, terminator = parts
    amz_date = lower.get("x-amz-date", "")
    try:
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise SigV4Rejected("Missing or malformed X-Amz-Date") from exc
    if scope_date != amz_date[:8]:
        raise SigV4Rejected(f"Credential should be scoped to a valid date: {amz_date[:8]}")
    if scope_region != region:
        raise SigV4Rejected(f"Credential should be scoped to a valid region, not '{scope_region}'")
    if service != "execute-api" or terminator != "aws4_request":
        raise SigV4Rejected("Credential should be scoped to correct service: 'execute-api'")
    now = now or datetime.now(UTC)
    if abs(now - signed_at) > MAX_SKEW:
        raise SigV4Rejected(
            f"Signature expired: {amz_date} is now earlier than "
            f"{(now - MAX_SKEW).strftime('%Y%m%dT%H%M%SZ')}"
        )
    credential = allowed.get(akid)
    if credential is None:
        raise SigV4Rejected("The security token included in the request is invalid.")
    signed = match["signed"].split(";")
    if "host" not in signed:
        raise SigV4Rejected(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
        )
    missing = [h for h in signed if h not in lower]
    if missing:
        raise SigV4Rejected(f"signed header {missing[0]!r} is not in the request")
    request = AWSRequest(method=method, url=url, data=body, headers={h: lower[h] for h in signed})
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(
        Credentials(akid, credential.secret_access_key, lower.get("x-amz-security-token")),
        "execute-api",
        region,
    )
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, match["sig"]):
        raise SigV4Rejected(
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method."
        )
    return credential


def iam_context(credential: AllowedCredential) -> dict[str, Any]:
    """The ``requestContext.authorizer.iam`` API Gateway hands the Lambda."""
    account = credential.arn.split(":")[4] if credential.arn.count(":") >= 5 else "000000000000"
    return {
        "accessKey": credential.access_key_id,
        "accountId": account,
        "callerId": credential.access_key_id,
        "cognitoIdentity": None,
        "principalOrgId": None,
        "userArn": credential.arn,
        "userId": credential.access_key_id,
    }
