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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
