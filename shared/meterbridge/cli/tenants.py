"""``meterbridge tenants ...``: the operator's commands against the admin API over HTTP.

The URL comes from ``--url`` (or ``METERBRIDGE_URL``), the admin token from
``METERBRIDGE_ADMIN_TOKEN``. ``create`` sends an ``Idempotency-Key`` (a fresh UUID unless
``--idempotency-key`` is given) and retries 502/503/409-in-progress answers with the same key,
so an interrupted onboarding finishes without duplicates. Output is the API's JSON.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Annotated, Any

import httpx
import typer

DEFAULT_URL = "http://127.0.0.1:8000"
RETRYABLE = frozenset({409, 502, 503})

app = typer.Typer(no_args_is_help=True, help="Provision, inspect, suspend and offboard tenants.")

UrlOption = Annotated[
    str, typer.Option("--url", envvar="METERBRIDGE_URL", help="Base URL of the admin API")
]


def client(url: str) -> httpx.Client:
    token = os.environ.get("METERBRIDGE_ADMIN_TOKEN", "")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=30.0)


def show(resp: httpx.Response) -> Any:
    """Print the JSON answer; on an error print it to stderr and exit 1."""
    try:
        payload = resp.json()
    except ValueError:
        payload = {"error": {"code": "http_error", "message": resp.text[:500]}}
    if resp.status_code >= 400:
        typer.echo(json.dumps(payload, indent=2), err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(payload, indent=2))
    return payload


@app.command()
def create(
    name: Annotated[str, typer.Option(help="Customer name")],
    email: Annotated[str, typer.Option(help="Billing email")],
    plan: Annotated[str, typer.Option(help="Plan id (free, basic, pro, enterprise)")] = "free",
    idempotency_key: Annotated[
        str | None, typer.Option(help="Reuse to resume an interrupted create")
    ] = None,
    retries: Annotated[int, typer.Option(min=0, max=10, help="Retries on 502/503/409")] = 3,
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Provision a tenant (Stripe customer, subscription, first key). The key is shown once."""
    key = idempotency_key or f"cli-{uuid.uuid4()}"
    headers = {"Idempotency-Key": key}
    with client(url) as http:
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
        typer.echo(f"Idempotency-Key: {key} (retry with --idempotency-key {key})", err=True)
    show(resp)


@app.command("list")
def list_(
    status: Annotated[str | None, typer.Option(help="active, suspended, deleted, ...")] = None,
    plan: Annotated[str | None, typer.Option(help="Plan id")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 50,
    cursor: Annotated[str | None, typer.Option(help="next_cursor of the previous page")] = None,
    url: UrlOption = DEFAULT_URL,
) -> None:
    """List tenants, oldest first."""
    params: dict[str, Any] = {"limit": limit}
    for k, v in (("status", status), ("plan", plan), ("cursor", cursor)):
        if v:
            params[k] = v
    with client(url) as http:
        show(http.get("/admin/tenants", params=params))


@app.command("show")
def show_(tenant_id: str, url: UrlOption = DEFAULT_URL) -> None:
    """Show one tenant."""
    with client(url) as http:
        show(http.get(f"/admin/tenants/{tenant_id}"))


@app.command("set-plan")
def set_plan(tenant_id: str, plan: str, url: UrlOption = DEFAULT_URL) -> None:
    """Change a tenant's plan (moves its Stripe subscription)."""
    with client(url) as http:
        show(http.patch(f"/admin/tenants/{tenant_id}", json={"plan": plan}))


@app.command()
def suspend(tenant_id: str, url: UrlOption = DEFAULT_URL) -> None:
    """Suspend a tenant: its keys get 403 until resumed."""
    with client(url) as http:
        show(http.post(f"/admin/tenants/{tenant_id}/suspend"))


@app.command()
def resume(tenant_id: str, url: UrlOption = DEFAULT_URL) -> None:
    """Resume a suspended tenant."""
    with client(url) as http:
        show(http.post(f"/admin/tenants/{tenant_id}/resume"))


@app.command()
def delete(
    tenant_id: str,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation")] = False,
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Offboard a tenant: revoke its keys, cancel its subscription, mark it deleted."""
    if not yes:
        typer.confirm(f"Offboard {tenant_id}? Its keys stop working at once", abort=True)
    with client(url) as http:
        show(http.delete(f"/admin/tenants/{tenant_id}"))
