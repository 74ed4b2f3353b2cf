"""Short-lived stream tokens: a browser's EventSource cannot send ``Authorization``.

``POST /v1/stream-tokens`` (tenant key) returns ``<payload>.<signature>``, both base64url:
the payload is ``{"t": tenant_id, "k": key lookup id, "exp": epoch seconds}`` and the
signature is HMAC-SHA256 over the payload bytes with ``METERBRIDGE_STREAM_TOKEN_SECRET``.
The token names the tenant, never the key secret, so it is safe in a URL for its short life.

Without ``METERBRIDGE_STREAM_TOKEN_SECRET`` each process signs with its own random secret:
fine for one task, but behind a load balancer with several tasks a token issued by one task
is refused by the others, so set the variable (one secret shared by all tasks) there.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from meterbridge.errors import Unauthorized

_process_secret = secrets.token_bytes(32)


@dataclass(frozen=True)
class StreamToken:
    token: str
    tenant_id: str
    key_id: str
    expires_at: int


def signing_key(configured: str) -> bytes:
    """The configured secret, or this process's random one."""
    return configured.encode() if configured else _process_secret


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(payload: bytes, key: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()


def issue(
    tenant_id: str, key_id: str, *, key: bytes, ttl_s: int, now: float | None = None
) -> StreamToken:
    expires_at = int((time.time() if now is None else now) + ttl_s)
    payload = json.dumps(
        {"t": tenant_id, "k": key_id, "exp": expires_at}, separators=(",", ":")
    ).encode()
    token = f"{_b64(payload)}.{_b64(_sign(payload, key))}"
    return StreamToken(token=token, tenant_id=tenant_id, key_id=key_id, expires_at=expires_at)


def verify(token: str, *, key: bytes, now: float | None = None) -> StreamToken:
    """The token's claims; ``Unauthorized`` if it is malformed, forged or expired."""
    payload_part, _, signature_part = token.partition(".")
    try:
        payload = _unb64(payload_part)
        signature = _unb64(signature_part)
    except (binascii.Error, ValueError):
        raise Unauthorized("the stream token is malformed") from None
    if not signature_part or not hmac.compare_digest(signature, _sign(payload, key)):
        raise Unauthorized("the stream token is not valid")
    try:
        claims = json.loads(payload)
        tenant_id, key_id, expires_at = str(claims["t"]), str(claims["k"]), int(claims["exp"])
    except (ValueError, KeyError, TypeError):
        raise Unauthorized("the stream token is malformed") from None
    if (time.time() if now is None else now) >= expires_at:
        raise Unauthorized("the stream token has expired; request a new one")
    return StreamToken(token=token, tenant_id=tenant_id, key_id=key_id, expires_at=expires_at)
