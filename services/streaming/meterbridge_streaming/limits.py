"""Request body caps for every route served by uvicorn (the local stack, the streaming service).

``BodyLimit`` reads the body itself, counting bytes as they arrive, whatever the transfer
encoding: a declared ``Content-Length`` over the cap is refused before a byte is read, and a
chunked body is refused as soon as it passes the cap. The refusal is the usual error body
(413 ``payload_too_large``) with ``Connection: close``, so the server stops reading the upload.
A body within the cap is handed to the app whole (one ``http.request`` message); later
``receive`` calls (an SSE stream waiting for the client to leave) reach the server.

On AWS, API Gateway and the Function URL buffer a body before the Lambda runs (10 MB and 6 MB
caps) and the ingest route checks its own 1 MB; this guard is for servers that stream bodies.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from meterbridge.errors import error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Usage ingest: 1 MB (logic/ingest.MAX_BODY_BYTES, kept equal by a test). Stripe events are a
# few KB to a few hundred KB. Everything else (admin, stream tokens, dead letters) is small JSON.
INGEST_BODY_BYTES = 1_000_000
WEBHOOK_BODY_BYTES = 1_000_000
DEFAULT_BODY_BYTES = 64 * 1024
ROUTE_BODY_LIMITS: dict[str, int] = {
    "/v1/events": INGEST_BODY_BYTES,
    "/stripe/webhook": WEBHOOK_BODY_BYTES,
}


class BodyLimit:
    """ASGI middleware: cap each request body by path (exact match), else ``default``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limits: Mapping[str, int] | None = None,
        default: int = DEFAULT_BODY_BYTES,
    ) -> None:
        self.app = app
        self.limits = dict(ROUTE_BODY_LIMITS if limits is None else limits)
        self.default = default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope.get("path", ""), self.default)
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _refuse(send, limit)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left before its body was complete: nothing to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _refuse(send, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1").strip()
    return None


async def _refuse(send: Send, limit: int) -> None:
    payload = json.dumps(
        error_body(
            "payload_too_large",
            f"the request body is over {limit} bytes",
            {"limit_bytes": limit},
        )
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload, "more_body": False})
