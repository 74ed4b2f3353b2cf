"""``meterbridge billing ...``: the money loop's operator commands (docs/billing.md)."""

from __future__ import annotations

import typer

billing_app = typer.Typer(no_args_is_help=True, help="Billing (overage on Stripe invoices)")


@billing_app.command("reconcile")
def reconcile(
    period: str = typer.Option(..., "--period", help="the usage period, YYYY-MM"),
    fix: bool = typer.Option(
        False, "--fix", help="add the missing lines (pending items on the next invoice)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Metered overage against Stripe's invoice items, per tenant and meter.

    Exit status 0 when they agree, 1 when they differ (after --fix: when any is left), 2 on
    error."""
    from meterbridge.errors import MeterbridgeError
    from meterbridge_dev.cli.state import use_local_stack

    use_local_stack()
    from meterbridge.logic.billing.reconcile import publish_unbilled
    from meterbridge.logic.billing.reconcile import reconcile as run

    try:
        report = run(period, fix=fix)
    except MeterbridgeError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(code=2) from exc
    publish_unbilled(report)
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
    else:
        for row in report.rows:
            mark = "" if row.difference_cents == 0 else "  <- differs"
            typer.echo(
                f"{row.tenant_id}  {row.meter:<10} metered {row.metered_cents:>9}"
                f"  invoiced {row.invoiced_cents:>9}  difference {row.difference_cents:>9}{mark}"
            )
        typer.echo(
            f"period {report.period}: {len(report.rows)} rows, difference "
            f"{report.difference_cents} cents, unbilled {report.unbilled_cents} cents"
            + (f", fixed {len(report.fixed)}" if fix else "")
        )
    if report.difference_cents != 0 or report.unbilled_cents:
        raise typer.Exit(code=1)
