"""``meterbridge dev``: the whole product on one port with embedded stand-ins."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from meterbridge.timestamps import rfc3339
from meterbridge_dev.cli.target import CliError

console = Console(highlight=False, soft_wrap=True)


INVOKE_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_DEFAULT_REGION",
    "TENANTS_TABLE",
    "EVENTS_TABLE",
    "USAGE_TABLE",
    "IDEMPOTENCY_TABLE",
    "NATS_ENABLED",
    "NATS_SERVERS",
    "OPENMETER_ENABLED",
    "OPENMETER_BASE_URL",
    "OPENMETER_API_KEY",
    "STRIPE_API_KEY",
    "STRIPE_API_BASE",
    "STRIPE_WEBHOOK_SECRET",
    "METERBRIDGE_KEY_PEPPER",
    "METERBRIDGE_KEY_ENV",
    "METERBRIDGE_PLANS_FILE",
)


def _check_port(host: str, port: int) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise CliError(
                f"port {port} on {host} is in use ({exc.strerror}): pass --port"
                " (or `make dev PORT=8010`)"
            ) from exc


def flush_line(result: Any) -> str:
    """One readable line for a flush run."""
    if not isinstance(result, dict) or "error" in result:
        return f"flush      FAILED {result.get('error') if isinstance(result, dict) else result}"
    line = (
        f"flush      sent {result.get('sent', 0)}, retried {result.get('retried', 0)},"
        f" dead-lettered {result.get('dead_lettered', 0)}, remaining {result.get('remaining', 0)}"
        f" ({result.get('duration_ms', 0)} ms)"
    )
    if result.get("stopped"):
        line += f" stopped: {result['stopped']}"
    return line


def dev(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(envvar="METERBRIDGE_PORT", help="Port for every HTTP surface")
    ] = 8000,
    flush_interval: Annotated[
        float, typer.Option("--flush-interval", help="Seconds between OpenMeter flushes", min=0.2)
    ] = 60.0,
    demo: Annotated[
        bool, typer.Option("--demo", help="Provision a demo tenant and send synthetic usage")
    ] = False,
    admin_auth: Annotated[
        str,
        typer.Option(
            "--admin-auth",
            help="token: METERBRIDGE_ADMIN_TOKEN; iam: verify SigV4 as API Gateway does",
        ),
    ] = "token",
    iam_credentials: Annotated[
        Path | None,
        typer.Option(
            "--iam-credentials",
            envvar="METERBRIDGE_IAM_CREDENTIALS",
            help="JSON list of allowed credentials for --admin-auth iam (default: generated)",
        ),
    ] = None,
    stripe: Annotated[
        str,
        typer.Option(
            "--stripe", help="fake: the bundled stand-in; real: STRIPE_API_KEY/STRIPE_API_BASE"
        ),
    ] = "fake",
    log_format: Annotated[
        str, typer.Option("--log-format", help="text (one line per request) or json")
    ] = "text",
    openmeter_reject: Annotated[
        list[str] | None,
        typer.Option(
            "--openmeter-reject",
            help="Event id the embedded OpenMeter refuses with 400 (repeat; see a dead letter)",
        ),
    ] = None,
) -> None:
    """Run the local stack: usage, admin, webhook, streaming and health on one port."""
    if admin_auth not in ("token", "iam"):
        raise typer.BadParameter("--admin-auth is token or iam")
    if stripe not in ("fake", "real"):
        raise typer.BadParameter("--stripe is fake or real")
    if log_format not in ("text", "json"):
        raise typer.BadParameter("--log-format is text or json")
    _check_port(host, port)

    import uvicorn

    from meterbridge_dev.cli.state import remove_state, state_path, write_state
    from meterbridge_dev.stack.console import install_console_logging
    from meterbridge_dev.stack.stack import LocalStack

    console.print("[bold]meterbridge[/bold] local stack starting")
    region = os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ["METERBRIDGE_ADMIN_AUTH"] = admin_auth
    allowed = None
    if admin_auth == "iam":
        from meterbridge_dev.stack.sigv4 import generate_credentials, load_credentials

        creds_path = iam_credentials or state_path().with_name("iam-credentials.json")
        try:
            if creds_path.is_file():
                allowed = load_credentials(creds_path)
            else:
                allowed = generate_credentials(creds_path)
        except (OSError, ValueError, KeyError) as exc:
            raise CliError(f"--iam-credentials {creds_path}: {exc}") from exc
    emit = install_console_logging(log_format, console.print)
    stack = LocalStack(
        host=host,
        flush_interval_s=flush_interval,
        say=console.print,
        stripe=stripe,
        openmeter_reject=tuple(openmeter_reject or ()),
    )
    stop_demo = None
    stack.start()
    try:
        from meterbridge_dev.stack.devapp import create_dev_app

        def report(result: object) -> None:
            emit(
                {"kind": "flush", **result} if isinstance(result, dict) else {}, flush_line(result)
            )

        stack.start_flush_timer(report)
        base = f"http://{host}:{port}"
        console.print(
            f"HTTP       {base}  (/v1/events  /v1/usage  /v1/stream  /admin/...  "
            "/stripe/webhook  /health/live  /health/ready  /metrics)"
        )
        if stack.connect_stripe_webhook(base):
            console.print("Webhooks   the Stripe stand-in delivers its events to /stripe/webhook")
        console.print(f"API docs   {base}/docs (Swagger UI)")
        console.print(f"Dashboard  {base}/")
        if admin_auth == "iam":
            console.print(
                f"Admin      SigV4 ({region}, execute-api); allowed credentials in {creds_path}"
            )
        elif os.environ.get("METERBRIDGE_ADMIN_TOKEN"):
            console.print("Admin      token set (METERBRIDGE_ADMIN_TOKEN)")
        else:
            console.print(
                "Admin      WARNING: METERBRIDGE_ADMIN_TOKEN is not set, /admin answers 401"
                " (export METERBRIDGE_ADMIN_TOKEN=... before `meterbridge dev`)"
            )
        console.print(
            "Logs       this console: one line per request and per flush"
            + (" (JSON)" if log_format == "json" else " (--log-format json for JSON)")
        )
        from meterbridge_streaming.serving import uvicorn_options

        config = uvicorn.Config(
            create_dev_app(iam_credentials=allowed, region=region, on_request=emit),
            **uvicorn_options(
                host=host,
                port=port,
                log_level="warning",
                access_log=False,
                lifespan="on",
                timeout_graceful_shutdown=10,
            ),
        )
        server = uvicorn.Server(config)
        if demo:
            from meterbridge_dev.stack.demo import start_demo

            stop_demo = start_demo(base, console.print)
        state = {
            "url": base,
            "admin_auth": admin_auth,
            "region": region,
            "started_at": rfc3339(timespec="seconds"),
            "log_format": log_format,
            **{name: url for name, url in stack.endpoints.items()},
            # What `meterbridge invoke` needs to run a function as this stack's own would.
            "env": {k: os.environ[k] for k in INVOKE_ENV if os.environ.get(k)},
            "tables": {
                "tenants": os.environ["TENANTS_TABLE"],
                "events": os.environ["EVENTS_TABLE"],
                "usage": os.environ["USAGE_TABLE"],
                "idempotency": os.environ["IDEMPOTENCY_TABLE"],
            },
        }
        console.print(f"State      {write_state(state)} (read by the other commands)")
        console.print("Ctrl-C to stop.")
        # uvicorn re-raises the signal that stopped it once it has shut down; these handlers
        # take it so the embedded servers below are stopped before the process exits.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: None)
        server.run()
        if not server.started:
            raise CliError(f"could not listen on {host}:{port}: pass another --port")
    finally:
        remove_state()
        if stop_demo is not None:
            stop_demo()
        console.print("stopping: " + (", ".join(stack.started) or "nothing embedded"))
        stack.stop()
        console.print("stopped.")
