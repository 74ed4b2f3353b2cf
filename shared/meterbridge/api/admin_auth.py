"""Admin authentication: the API Gateway IAM authorizer on AWS, a bearer token locally.

``METERBRIDGE_ADMIN_AUTH=iam`` (set by template.yaml) trusts only requests that API Gateway
authorized with SigV4 (the IAM identity is in the Lambda event's request context; a request
cannot forge it because the route itself requires AWS_IAM). ``token`` (the default locally)
compares ``Authorization: Bearer <token>`` with ``METERBRIDGE_ADMIN_TOKEN`` in constant time.
No admin route answers without one of the two.
"""

import hmac

from fastapi import Request

from meterbridge.errors import Unauthorized
from meterbridge.settings import get_settings


def _iam_identity(request: Request) -> str | None:
    event = request.scope.get("aws.event") or {}
    iam = ((event.get("requestContext") or {}).get("authorizer") or {}).get("iam") or {}
    arn = iam.get("userArn") or iam.get("callerId")
    return str(arn) if arn else None


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def require_admin(request: Request) -> str:
    """The admin principal (IAM ARN or ``"admin-token"``); 401 otherwise."""
    settings = get_settings()
    if settings.admin_auth == "iam":
        identity = _iam_identity(request)
        if identity is None:
            raise Unauthorized("admin API requires an IAM-signed request")
        return identity
    expected = settings.admin_token
    if not expected:
        raise Unauthorized("admin API is disabled: METERBRIDGE_ADMIN_TOKEN is not set")
    token = bearer_token(request)
    if token is None or not hmac.compare_digest(token.encode(), expected.encode()):
        raise Unauthorized("a valid admin token is required")
    return "admin-token"
