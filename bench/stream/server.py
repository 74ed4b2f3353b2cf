"""One SSE relay for the bench, in its own process pinned to one CPU.

    python -m bench.stream.server ours|baseline --port P --nats URL --cpu N

``ours``: meterbridge_streaming (one JetStream consumer, shared fan-out). Auth is left out on
both sides: it runs once per connection, and the bench measures per-event cost.
``baseline``: the obvious relay with sse-starlette: one NATS subscription per client, each
message parsed and re-serialised per client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


def ours_app() -> FastAPI:
    from meterbridge_streaming.service import SSEResponse, stream_lifespan

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with stream_lifespan(app):
            yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/ready")
    async def ready() -> JSONResponse:
        ok = app.state.stream_service.bridge.connected
        return JSONResponse({"ok": ok}, status_code=200 if ok else 503)

    @app.get("/stream")
    async def stream(tenant: str) -> Any:
        return SSEResponse(app.state.stream_service, tenant, None)

    return app


def baseline_app(nats_url: str) -> FastAPI:
    import nats
    from sse_starlette.sse import EventSourceResponse

    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state["nc"] = await nats.connect(nats_url)
        yield
        await state["nc"].close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/ready")
    async def ready() -> JSONResponse:
        return JSONResponse({"ok": True})

    @app.get("/stream")
    async def stream(request: Request, tenant: str) -> Any:
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=1000)

        async def on_message(msg: Any) -> None:
            await queue.put(msg)

        sub = await state["nc"].subscribe(f"meterbridge.tenant.{tenant}.>", cb=on_message)

        async def events() -> AsyncIterator[dict[str, str]]:
            n = 0
            try:
                while True:
                    msg = await queue.get()
                    event = json.loads(msg.data)
                    n += 1
                    yield {"id": str(n), "event": event["type"], "data": json.dumps(event)}
            finally:
                await sub.unsubscribe()

        return EventSourceResponse(events())

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["ours", "baseline"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--nats", required=True)
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument("--profile", default=None, help="write a CPU sampling report here")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    os.environ.update(
        {"NATS_ENABLED": "true", "NATS_SERVERS": args.nats, "POWERTOOLS_LOG_LEVEL": "WARNING"}
    )
    app = ours_app() if args.kind == "ours" else baseline_app(args.nats)
    sampler = None
    if args.profile:
        from bench.stream.sampler import Sampler

        # uvicorn re-raises the SIGTERM it handled: exit through ``finally`` to write the file.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        # Started by the bench's SIGUSR1 at the start of the measured window.
        sampler = Sampler()
        signal.signal(signal.SIGUSR1, lambda *_: sampler.start())
    try:
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    finally:
        if sampler is not None:
            sampler.stop()
            sampler.report(args.profile)


if __name__ == "__main__":
    main()
