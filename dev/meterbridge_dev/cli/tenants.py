"""``meterbridge tenants ...``: the operator's commands against the admin API over HTTP.

The target is the local stack (its state file), ``--url``, or a deployed stack
(``--stack-name`` / ``--config-env``, signed with SigV4): see ``meterbridge_dev.cli.target``.
``create`` sends an ``Idempotency-Key`` (a fresh UUID unless ``--idempotency-key`` is given) and
retries 502/503/409-in-progress answers with the same key, so an interrupted onboarding finishes
without duplicates. Output is a table, or the API's JSON with ``--json``.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any

import httpx
import typer

from meterbridge_dev.cli.target import (
    CliError,
    Options,
    admin_client,
    admin_command,
    error_line,
    resolve,
    show,
)

DEFAULT_URL = "http://127.0.0.1:8000"
RETRYABLE = frozenset({409, 502, 503})

app = typer.Typer(no_args_is_help=True, help="Provision, inspect, suspend and offboard tenants.")

UrlOption = Annotated[
    str, typer.Option("--url", envvar="METERBRIDGE_URL", help="Base URL of the admin API")
]

__all__ = ["DEFAULT_URL", "UrlOption", "admin_client", "admin_command", "app", "client", "show"]


def client(url: str | None = None) -> httpx.Client:
    """A client for ``url`` (or the resolved target) with its admin auth; for other commands."""
    target = resolve(Options(url=url))
    from meterbridge_dev.cli.target import SigV4

    if target.auth == "iam":
        return httpx.Client(
            base_url=target.url, auth=SigV4(target.profile, target.region), timeout=30.0
        )
    import os

    token = os.environ.get("METERBRIDGE_ADMIN_TOKEN", "")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=target.url, headers=headers, timeout=30.0)


@app.command()
@admin_command
def create(
    name: Annotated[str, typer.Option(help="Customer name")],
    email: Annotated[str, typer.Option(help="Billing email")],
    plan: Annotated[str, typer.Option(help="Plan id (free, basic, pro, enterprise)")] = "free",
    idempotency_key: Annotated[
        str | None, typer.Option(help="Reuse to resume an interrupted create")
    ] = None,
    retries: Annotated[int, typer.Option(min=0, max=10, help="Retries on 502/503/409")] = 3,
) -> None:
    """Provision a tenant (Stripe customer, subscription, first key). The key is shown once."""
    key = idempotency_key or f"cli-{uuid.uuid4()}"
    headers = {"Idempotency-Key": key}
    with admin_client() as http:
        for attempt in range(retries + 1):
            resp = http.post(
                "/admin/tenants", json={"name": name, "email": email, "plan": plan}, headers=headers
            )
            if resp.status_code not in RETRYABLE or attempt == retries:
                break
            if resp.status_code == 409 and resp.json().get("error", {}).get("code") != (
                "provisioning_in_progress"
            ):
                break
            time.sleep(min(float(resp.headers.get("Retry-After", "1")), 5.0))
    if resp.status_code >= 400:
        raise CliError(error_line(resp) + f" (retry with --idempotency-key {key})")
    show(resp)


@app.command("list")
@admin_command
def list_(
    status: Annotated[str | None, typer.Option(help="active, suspended, deleted, ...")] = None,
    plan: Annotated[str | None, typer.Option(help="Plan id")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 50,
    cursor: Annotated[str | None, typer.Option(help="next_cursor of the previous page")] = None,
) -> None:
    """List tenants, oldest first."""
    params: dict[str, Any] = {"limit": limit}
    for k, v in (("status", status), ("plan", plan), ("cursor", cursor)):
        if v:
            params[k] = v
    with admin_client() as http:
        show(http.get("/admin/tenants", params=params))


@app.command("show")
@admin_command
def show_(tenant_id: str) -> None:
    """Show one tenant."""
    with admin_client() as http:
        show(http.get(f"/admin/tenants/{tenant_id}"))


@app.command("set-plan")
@admin_command
def set_plan(tenant_id: str, plan: str) -> None:
    """Change a tenant's plan (moves its Stripe subscription)."""
    with admin_client() as http:
        show(http.patch(f"/admin/tenants/{tenant_id}", json={"plan": plan}))


@app.command()
@admin_command
def suspend(tenant_id: str) -> None:
    """Suspend a tenant: its keys get 403 until resumed."""
    with admin_client() as http:
        show(http.post(f"/admin/tenants/{tenant_id}/suspend"))


@app.command()
@admin_command
def resume(tenant_id: str) -> None:
    """Resume a suspended tenant."""
    with admin_client() as http:
        show(http.post(f"/admin/tenants/{tenant_id}/resume"))


@app.command()
@admin_command
def delete(
    tenant_id: str,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation")] = False,
) -> None:
    """Offboard a tenant: revoke its keys, cancel its subscription, mark it deleted."""
    if not yes:
        typer.confirm(f"Offboard {tenant_id}? Its keys stop working at once", abort=True)
    with admin_client() as http:
        show(http.delete(f"/admin/tenants/{tenant_id}"))
