"""Entry point of the ``meterbridge`` command."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from meterbridge_dev.cli import backfill as backfill_cli
from meterbridge_dev.cli import billing as billing_cli
from meterbridge_dev.cli import deadletters as deadletters_cli
from meterbridge_dev.cli import keys as keys_cli
from meterbridge_dev.cli import openmeter as openmeter_cli
from meterbridge_dev.cli import tenants as tenants_cli
from meterbridge_dev.cli.dev import dev
from meterbridge_dev.cli.invoke import invoke
from meterbridge_dev.cli.status import status as status_cmd
from meterbridge_dev.cli.stripe import stripe_app
from meterbridge_dev.cli.target import DEBUG, CliError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="meterbridge: usage-based billing infrastructure (local stack and operations)",
)
app.command()(dev)
app.command()(invoke)
# Operators' command groups.
app.add_typer(tenants_cli.app, name="tenants")
app.add_typer(keys_cli.app, name="keys")
app.add_typer(stripe_app, name="stripe")
app.add_typer(deadletters_cli.app, name="deadletters")
app.add_typer(billing_cli.billing_app, name="billing")
app.command()(backfill_cli.backfill)
app.command(name="status")(status_cmd)
app.add_typer(openmeter_cli.app, name="openmeter")


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", envvar="METERBRIDGE_DEBUG", help="Show tracebacks")
    ] = False,
) -> None:
    """meterbridge: usage-based billing infrastructure (local stack and operations)"""
    DEBUG["on"] = debug


def main() -> None:
    """Run the CLI; any failure is one line on stderr and exit status 1 (``--debug``: traceback)."""
    try:
        app(standalone_mode=True)
    except CliError as exc:
        if DEBUG["on"]:
            raise
        typer.echo(f"error: {exc.message}", err=True)
        sys.exit(exc.code)
    except Exception as exc:  # the operator gets one line, --debug the rest
        if DEBUG["on"]:
            raise
        typer.echo(f"error: {one_line(exc)} (run with --debug for the traceback)", err=True)
        sys.exit(1)


def one_line(exc: BaseException) -> str:
    """A short description of an unexpected error (connection, credentials, AWS, HTTP)."""
    import botocore.exceptions
    import httpx

    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect: {str(exc).splitlines()[0] if str(exc) else 'refused'}"
    if isinstance(exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.NoRegionError):
        return str(exc)
    if isinstance(exc, botocore.exceptions.EndpointConnectionError):
        return f"cannot reach AWS: {exc}"
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        return f"AWS {err.get('Code', 'error')}: {err.get('Message', exc)}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


if __name__ == "__main__":
    main()
