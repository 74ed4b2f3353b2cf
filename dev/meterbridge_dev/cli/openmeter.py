"""``meterbridge openmeter ...``: OpenMeter's meters from the catalogue."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="OpenMeter integration (meters)")


@app.command("sync-meters")
def sync_meters(
    dry_run: bool = typer.Option(False, "--dry-run", help="print the diff, change nothing"),
) -> None:
    """Create or update OpenMeter's meters from the catalogue (idempotent; prints a diff:
    ``+`` create, ``~`` update, ``!`` conflict left alone, ``=`` unchanged)."""
    from meterbridge.adapters.openmeter_api import OpenMeterApi
    from meterbridge.errors import MeterbridgeError
    from meterbridge.logic.openmeter_meters import sync
    from meterbridge.plans import catalog
    from meterbridge.settings import get_settings

    try:
        plan = sync(catalog(), OpenMeterApi(get_settings()), dry_run=dry_run)
    except MeterbridgeError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(code=2) from exc
    for line in plan.lines():
        typer.echo(line)
    verb = "would create" if dry_run else "created"
    typer.echo(
        f"{verb} {len(plan.create)}, {'would update' if dry_run else 'updated'} "
        f"{len(plan.update)}, unchanged {len(plan.unchanged)}, conflicts {len(plan.conflicts)}"
    )
    if plan.conflicts:
        raise typer.Exit(code=1)
