"""A stand-in for a meterbridge that runs elsewhere: answers every ``POST /v1/events`` with
202 at once, in its own process. Prints ``{"url"}`` and serves until stdin closes."""

from __future__ import annotations

import json
import sys
from typing import Any

from meterbridge_dev.stack.servers import BackgroundServer

ANSWER = b'{"accepted":0,"duplicates":0}'


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 202, "headers": headers})
    await send({"type": "http.response.body", "body": ANSWER})


def main() -> None:
    with BackgroundServer(app) as server:
        print(json.dumps({"url": server.url}), flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
