"""``meterbridge invoke``: run one Lambda handler in-process (the ``sam local invoke`` stand-in)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from meterbridge.local.lambda_runtime import FUNCTIONS


def invoke(
    function: Annotated[str, typer.Argument(help=f"One of: {', '.join(FUNCTIONS)}")],
    event: Annotated[
        Path,
        typer.Option(
            "--event", "-e", help="Event JSON file", exists=True, dir_okay=False, readable=True
        ),
    ],
    timeout: Annotated[float, typer.Option(help="Simulated Lambda timeout, seconds")] = 60.0,
) -> None:
    """Invoke FUNCTION with the event in FILE against the configured services."""
    import contextlib
    import sys

    from meterbridge.local.lambda_runtime import invoke as run
    from meterbridge.local.lambda_runtime import load_event
    from meterbridge.observability import logger

    if function not in FUNCTIONS:
        raise typer.BadParameter(f"unknown function {function!r}; one of {', '.join(FUNCTIONS)}")
    # As with sam local invoke: the function's logs and EMF metrics on stderr, its result
    # alone on stdout.
    logger.registered_handler.setStream(sys.stderr)  # type: ignore[attr-defined]
    with contextlib.redirect_stdout(sys.stderr):
        result = run(function, load_event(event), timeout_s=timeout)
    typer.echo(json.dumps(result, indent=2, default=str))
