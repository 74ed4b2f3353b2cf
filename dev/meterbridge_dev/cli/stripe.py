"""``meterbridge stripe ...``: operator commands for the Stripe integration."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from meterbridge_dev.cli.target import (
    CliError,
    admin_client,
    admin_command,
    current_options,
    error_line,
)

stripe_app = typer.Typer(
    no_args_is_help=True, help="Stripe integration (reconciliation, test webhooks)"
)

SAMPLES = "stripe-2026-10-28.endive"
# The ids the samples carry, replaced by the tenant's own.
SAMPLE_CUSTOMER = "cus_RkB2mXJ9dQ4sTz"
SAMPLE_SUBSCRIPTION = "sub_1QvGZ2LkdIwHu7ixK3c0xYzA"
SAMPLE_TENANT = "t_0123456789abcdef"


@stripe_app.command("reconcile")
def reconcile(
    since: str = typer.Option(
        "30d", "--since", help="how far back to look: 30d, 12h, 90m (max 30d)"
    ),
) -> None:
    """Apply Stripe events the webhook missed (same idempotent path; safe to re-run)."""
    from meterbridge.errors import MeterbridgeError
    from meterbridge_dev.cli.state import use_local_stack

    use_local_stack()
    from meterbridge_dev.stripe.reconcile import parse_since, reconcile_since

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


def _sample_events() -> dict[str, Path]:
    from meterbridge_dev.stack.lambda_runtime import repo_root

    return {p.stem: p for p in sorted((repo_root() / "events" / SAMPLES).glob("*.json"))}


def build_test_event(event_type: str, tenant: dict[str, Any]) -> dict[str, Any]:
    """The sample of ``event_type`` rewritten for ``tenant``: its ids, a new event id, now."""
    import secrets
    import time

    samples = _sample_events()
    if event_type not in samples:
        raise CliError(f"no sample for {event_type!r}; one of: {', '.join(samples)}")
    text = samples[event_type].read_text()
    customer = tenant.get("stripe_customer_id")
    if not customer:
        raise CliError(
            f"tenant {tenant['tenant_id']} has no Stripe customer (was it made with Stripe off?)"
        )
    text = text.replace(SAMPLE_CUSTOMER, customer).replace(SAMPLE_TENANT, tenant["tenant_id"])
    if tenant.get("stripe_subscription_id"):
        text = text.replace(SAMPLE_SUBSCRIPTION, tenant["stripe_subscription_id"])
    event: dict[str, Any] = json.loads(text)
    event["id"] = "evt_test_" + secrets.token_hex(12)
    event["created"] = int(time.time())
    return event


@stripe_app.command("trigger")
@admin_command
def trigger(
    event_type: Annotated[str, typer.Argument(help="Stripe event type, e.g. invoice.paid")],
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant the event is about")],
    webhook_url: Annotated[
        str | None,
        typer.Option(help="Webhook endpoint (default: the local stack's /stripe/webhook)"),
    ] = None,
) -> None:
    """Send a correctly signed test webhook of EVENT_TYPE about a tenant to the webhook."""
    import httpx

    from meterbridge_dev.cli.target import resolve
    from meterbridge_dev.fakes.stripe_fake import webhook_request

    target = resolve()
    with admin_client(target) as http:
        resp = http.get(f"/admin/tenants/{tenant}")
    if resp.status_code >= 400:
        raise CliError(error_line(resp))
    event = build_test_event(event_type, resp.json())
    local_env = (target.state or {}).get("env") or {}
    secrets = os.environ.get("STRIPE_WEBHOOK_SECRET") or local_env.get("STRIPE_WEBHOOK_SECRET")
    if not secrets:
        raise CliError("STRIPE_WEBHOOK_SECRET is not set: export the endpoint's signing secret")
    body, headers = webhook_request(event, secrets.split(",")[0].strip())
    url = webhook_url or f"{target.url}/stripe/webhook"
    try:
        answer = httpx.post(url, content=body, headers=headers, timeout=30.0)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach {url}: {exc}") from exc
    if answer.status_code >= 400:
        raise CliError(f"{event_type} {event['id']}: " + error_line(answer))
    payload = answer.json()
    if current_options().as_json:
        typer.echo(json.dumps({"event": event["id"], "status": answer.status_code, **payload}))
    else:
        typer.echo(
            f"{event_type} {event['id']} -> {answer.status_code} {payload.get('outcome', '')}"
        )


@stripe_app.command("sync-catalog")
def sync_catalog(
    dry_run: bool = typer.Option(False, "--dry-run", help="say what would change; write nothing"),
) -> None:
    """Create or update Stripe products and monthly prices for every priced plan (by lookup key
    meterbridge_<plan id>); writes nothing when Stripe already agrees."""
    from meterbridge.errors import MeterbridgeError
    from meterbridge_dev.cli.state import use_local_stack

    use_local_stack()
    from meterbridge_dev.stripe.catalog import sync_catalog as run

    try:
        changes = run(dry_run=dry_run)
    except MeterbridgeError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(code=2) from exc
    verb = "would" if dry_run else "did"
    for change in changes:
        typer.echo(f"{change.plan}: {verb} {change.action.replace('_', ' ')} ({change.detail})")
    if not changes:
        typer.echo("Stripe agrees with plans.json: nothing to do")
