"""``meterbridge stripe ...``: operator commands for the Stripe integration."""

from __future__ import annotations

import typer

stripe_app = typer.Typer(no_args_is_help=True, help="Stripe integration (reconciliation)")


@stripe_app.command("reconcile")
def reconcile(
    since: str = typer.Option(
        "30d", "--since", help="how far back to look: 30d, 12h, 90m (max 30d)"
    ),
) -> None:
    """Apply Stripe events the webhook missed (same idempotent path; safe to re-run)."""
    from meterbridge.errors import MeterbridgeError
    from meterbridge.logic.stripe_reconcile import parse_since, reconcile_since

    try:
        summary = reconcile_since(parse_since(since))
    except MeterbridgeError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(code=2) from exc
    typer.echo(
        f"listed {summary.listed}: applied {summary.applied}, already done {summary.already_done},"
        f" ignored {summary.ignored}, unmatched {summary.unmatched},"
        f" in flight {summary.in_flight}, failed {summary.failed}"
    )
    if summary.failed_ids:
        typer.echo("failed: " + " ".join(summary.failed_ids), err=True)
    if summary.failed or summary.in_flight:
        raise typer.Exit(code=1)
