"""Entry point of the ``meterbridge`` command."""

from __future__ import annotations

import typer

from meterbridge.cli.dev import dev
from meterbridge.cli.invoke import invoke

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="meterbridge: usage-based billing infrastructure (local stack and operations)")
app.command()(dev)
app.command()(invoke)
# Operators' command groups register below, one line each.
from meterbridge.cli import keys as keys_cli, tenants as tenants_cli  # noqa: E402

app.add_typer(tenants_cli.app, name="tenants")
app.add_typer(keys_cli.app, name="keys")
from meterbridge.cli.stripe import stripe_app  # noqa: E402

app.add_typer(stripe_app, name="stripe")
from meterbridge.cli import backfill as backfill_cli, deadletters as deadletters_cli  # noqa: E402

app.add_typer(deadletters_cli.app, name="deadletters")
app.command()(backfill_cli.backfill)
from meterbridge.cli.status import status as status_cmd  # noqa: E402

app.command(name="status")(status_cmd)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
