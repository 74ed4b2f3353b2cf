"""``meterbridge dev``: the whole product on one port with embedded stand-ins."""

from __future__ import annotations

import json
import signal
from typing import Annotated

import typer
from rich.console import Console

console = Console(highlight=False)


def dev(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port for every HTTP surface")] = 8000,
    flush_interval: Annotated[
        float, typer.Option("--flush-interval", help="Seconds between OpenMeter flushes", min=0.2)
    ] = 60.0,
    demo: Annotated[
        bool, typer.Option("--demo", help="Provision a demo tenant and send synthetic usage")
    ] = False,
) -> None:
    """Run the local stack: usage, admin, webhook, streaming and health on one port."""
    import uvicorn

    from meterbridge.local.stack import LocalStack

    console.print("[bold]meterbridge[/bold] local stack starting")
    stack = LocalStack(host=host, flush_interval_s=flush_interval, say=console.print)
    stop_demo = None
    stack.start()
    try:
        from meterbridge.local.devapp import create_dev_app

        def report(result: object) -> None:
            console.print(f"flush      {json.dumps(result, default=str)}")

        stack.start_flush_timer(report)
        base = f"http://{host}:{port}"
        console.print(
            f"HTTP       {base}  (/v1/events  /v1/usage  /v1/stream  /admin/...  "
            "/stripe/webhook  /health/live  /health/ready  /metrics)"
        )
        console.print(f"Dashboard  {base}/")
        console.print("Ctrl-C to stop.")
        from meterbridge.serving import uvicorn_options

        config = uvicorn.Config(
            create_dev_app(),
            **uvicorn_options(
                host=host,
                port=port,
                log_level="warning",
                lifespan="on",
                timeout_graceful_shutdown=10,
            ),
        )
        if demo:
            from meterbridge.local.demo import start_demo

            stop_demo = start_demo(base, console.print)
        # uvicorn re-raises the signal that stopped it once it has shut down; these handlers
        # take it so the embedded servers below are stopped before the process exits.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: None)
        uvicorn.Server(config).run()
    finally:
        if stop_demo is not None:
            stop_demo()
        console.print("stopping: " + (", ".join(stack.started) or "nothing embedded"))
        stack.stop()
        console.print("stopped.")
