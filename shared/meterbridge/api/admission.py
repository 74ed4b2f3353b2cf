"""Per-tenant admission before the app: a refused request costs no body read and no routing.

``TenantAdmission`` wraps the usage API. For a request with ``Authorization: Bearer <key>``
whose key is in the in-process key cache (``logic/auth.cached``: no I/O), it takes one token
of the tenant's bucket (``logic/rate.take_local``) straight from the ASGI scope. Out of tokens,
it answers ``429 rate_limited`` (the limit in the message, ``Retry-After``) itself: the body is
never read, FastAPI never routes the request, no DynamoDB call is made. Admitted, the principal
and what the bucket said ride in the scope's state, so ``require_tenant`` does not look them up
or take a token again.

A key not in the cache (first use in this process, a refusal not cached) goes on to the app,
where ``require_tenant`` authenticates it (one DynamoDB read) and takes the token. Other paths
(admin, health, the streaming routes, which take their own tokens) pass through untouched.
"""

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from meterbridge.errors import MeterbridgeError, RateLimited
from meterbridge.logic import rate
from meterbridge.logic.auth import cached
from meterbridge.models.principal import TenantPrincipal
from meterbridge.plans import catalog

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# The routes that authenticate with ``require_tenant`` (the streaming routes take their own
# tokens, logic/rate.py).
TENANT_PATHS = frozenset({"/v1/events", "/v1/usage", "/v1/usage/query"})
# What require_tenant finds in ``request.state`` when admission already ran.
STATE_PRINCIPAL = "admitted_principal"
STATE_BURSTING = "admitted_bursting"


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = bytes(value).decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


def admit(scope: Scope) -> TenantPrincipal | None:
    """The cached principal of the request's key with one token taken, None when the key is
    not cached (the app authenticates it); ``RateLimited`` when the tenant is out of tokens."""
    key = _bearer(scope)
    if key is None:
        return None
    try:
        principal = cached(key)
    except MeterbridgeError:
        return None  # a cached refusal (401/403): the app answers it as usual
    if principal is None:
        return None
    bursting = rate.take_local(principal.tenant_id, catalog().plan(principal.plan))
    state = scope.setdefault("state", {})
    state[STATE_PRINCIPAL] = principal
    state[STATE_BURSTING] = bursting
    return principal


class TenantAdmission:
    """ASGI middleware: the per-tenant bucket before the body is read or the route is found."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") in TENANT_PATHS:
            try:
                admit(scope)
            except RateLimited as exc:
                await _refuse(send, exc)
                return
        await self.app(scope, receive, send)


async def _refuse(send: Send, exc: RateLimited) -> None:
    payload = json.dumps(exc.body(), separators=(",", ":")).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers.items()]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})
