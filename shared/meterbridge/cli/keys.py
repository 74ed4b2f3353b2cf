"""``meterbridge keys ...``: issue, list, revoke and rotate a tenant's API keys over HTTP."""

from __future__ import annotations

from typing import Annotated

import typer

from meterbridge.cli.tenants import DEFAULT_URL, UrlOption, client, show
from meterbridge.models.tenant import DEFAULT_GRACE_S, MAX_GRACE_S

app = typer.Typer(no_args_is_help=True, help="Issue, list, revoke and rotate API keys.")


@app.command()
def issue(tenant_id: str, url: UrlOption = DEFAULT_URL) -> None:
    """Issue a new key. Its secret is printed once and cannot be shown again."""
    with client(url) as http:
        show(http.post(f"/admin/tenants/{tenant_id}/keys"))


@app.command("list")
def list_(tenant_id: str, url: UrlOption = DEFAULT_URL) -> None:
    """List a tenant's keys (id, prefix, status, created, last used; never the secret)."""
    with client(url) as http:
        show(http.get(f"/admin/tenants/{tenant_id}/keys"))


@app.command()
def revoke(tenant_id: str, key_id: str, url: UrlOption = DEFAULT_URL) -> None:
    """Revoke a key: refused everywhere within the key cache TTL (at most 60 s)."""
    with client(url) as http:
        show(http.post(f"/admin/tenants/{tenant_id}/keys/{key_id}/revoke"))


@app.command()
def rotate(
    tenant_id: str,
    key_id: str,
    grace_seconds: Annotated[
        int, typer.Option(min=0, max=MAX_GRACE_S, help="How long the old key keeps working")
    ] = DEFAULT_GRACE_S,
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Issue a replacement key; the old one expires after the grace period."""
    with client(url) as http:
        show(
            http.post(
                f"/admin/tenants/{tenant_id}/keys/{key_id}/rotate",
                json={"grace_seconds": grace_seconds},
            )
        )
