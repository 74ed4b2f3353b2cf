"""``meterbridge keys ...``: issue, list, revoke and rotate a tenant's API keys over HTTP."""

from __future__ import annotations

from typing import Annotated

import typer

from meterbridge.models.tenant import DEFAULT_GRACE_S, MAX_GRACE_S
from meterbridge_dev.cli.target import admin_client, admin_command, show

app = typer.Typer(no_args_is_help=True, help="Issue, list, revoke and rotate API keys.")


@app.command()
@admin_command
def issue(tenant_id: str) -> None:
    """Issue a new key. Its secret is printed once and cannot be shown again."""
    with admin_client() as http:
        show(http.post(f"/admin/tenants/{tenant_id}/keys"))


@app.command("list")
@admin_command
def list_(tenant_id: str) -> None:
    """List a tenant's keys (id, prefix, status, created, last used; never the secret)."""
    with admin_client() as http:
        show(http.get(f"/admin/tenants/{tenant_id}/keys"))


@app.command()
@admin_command
def revoke(tenant_id: str, key_id: str) -> None:
    """Revoke a key: refused everywhere within the key cache TTL (at most 60 s)."""
    with admin_client() as http:
        show(http.post(f"/admin/tenants/{tenant_id}/keys/{key_id}/revoke"))


@app.command()
@admin_command
def rotate(
    tenant_id: str,
    key_id: str,
    grace_seconds: Annotated[
        int, typer.Option(min=0, max=MAX_GRACE_S, help="How long the old key keeps working")
    ] = DEFAULT_GRACE_S,
) -> None:
    """Issue a replacement key; the old one expires after the grace period."""
    with admin_client() as http:
        show(
            http.post(
                f"/admin/tenants/{tenant_id}/keys/{key_id}/rotate",
                json={"grace_seconds": grace_seconds},
            )
        )
