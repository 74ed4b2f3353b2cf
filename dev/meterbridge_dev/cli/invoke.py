"""``meterbridge invoke``: run one Lambda handler in-process (the ``sam local invoke`` stand-in)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from meterbridge_dev.stack.lambda_runtime import FUNCTIONS


def invoke(
    function: Annotated[str, typer.Argument(help=f"One of: {', '.join(FUNCTIONS)}")],
    event: Annotated[
        Path,
        typer.Option(
            "--event", "-e", help="Event JSON file", exists=True, dir_okay=False, readable=True
        ),
    ],
    timeout: Annotated[float, typer.Option(help="Simulated Lambda timeout, seconds")] = 60.0,
    fill: Annotated[
        bool,
        typer.Option(
            "--fill/--no-fill",
            help="Fill placeholders: a demo tenant's key, a Stripe signature, the IAM context",
        ),
    ] = True,
) -> None:
    """Invoke FUNCTION with the event in FILE against the running ``meterbridge dev`` (its state
    file), or against the services the environment names when no local stack runs."""
    import contextlib
    import os
    import sys
    import warnings

    from meterbridge.observability import logger
    from meterbridge_dev.cli.state import use_local_stack
    from meterbridge_dev.stack.lambda_runtime import invoke as run
    from meterbridge_dev.stack.lambda_runtime import load_event

    if function not in FUNCTIONS:
        raise typer.BadParameter(f"unknown function {function!r}; one of {', '.join(FUNCTIONS)}")
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    use_local_stack()  # the same services and secrets as the stack's own functions
    if function == "tenant_admin":
        os.environ.setdefault("METERBRIDGE_ADMIN_AUTH", "iam")  # as template.yaml sets it
    from meterbridge.dal import dynamo
    from meterbridge.settings import get_settings

    get_settings.cache_clear()
    dynamo.reset_clients()
    data = load_event(event)
    # As with sam local invoke: the function's logs and EMF metrics on stderr, its result
    # alone on stdout.
    logger.registered_handler.setStream(sys.stderr)  # type: ignore[attr-defined]
    with contextlib.redirect_stdout(sys.stderr):
        if fill:
            from meterbridge_dev.stack.invoke_fill import fill as fill_event

            secrets = get_settings().stripe_webhook_secret
            try:
                data = fill_event(data, secrets[0] if secrets else None)
            except ValueError as exc:
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(1) from exc
        result = run(function, data, timeout_s=timeout)
    typer.echo(json.dumps(result, indent=2, default=str))
