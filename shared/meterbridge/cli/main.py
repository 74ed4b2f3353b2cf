"""Entry point of the ``meterbridge`` command."""

from __future__ import annotations

import typer

from meterbridge.cli import backfill as backfill_cli
from meterbridge.cli import deadletters as deadletters_cli
from meterbridge.cli import keys as keys_cli
from meterbridge.cli import openmeter as openmeter_cli
from meterbridge.cli import tenants as tenants_cli
from meterbridge.cli.dev import dev
from meterbridge.cli.invoke import invoke
from meterbridge.cli.status import status as status_cmd
from meterbridge.cli.stripe import stripe_app

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="meterbridge: usage-based billing infrastructure (local stack and operations)",
)
app.command()(dev)
app.command()(invoke)
# Operators' command groups.
app.add_typer(tenants_cli.app, name="tenants")
app.add_typer(keys_cli.app, name="keys")
app.add_typer(stripe_app, name="stripe")
app.add_typer(deadletters_cli.app, name="deadletters")
app.command()(backfill_cli.backfill)
app.command(name="status")(status_cmd)
app.add_typer(openmeter_cli.app, name="openmeter")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
