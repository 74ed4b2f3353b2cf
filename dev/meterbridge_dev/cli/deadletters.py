"""``meterbridge deadletters list|retry``: events OpenMeter rejected, over the admin API.

The target and auth are resolved as for ``meterbridge tenants`` (``meterbridge_dev.cli.target``).
"""

from __future__ import annotations

from typing import Annotated

import typer

from meterbridge_dev.cli.target import admin_client, admin_command, show

app = typer.Typer(no_args_is_help=True, help="List and retry dead-lettered events.")


@app.command("list")
@admin_command
def list_(
    limit: Annotated[int, typer.Option(min=1, max=200, help="Dead letters per page")] = 50,
    cursor: Annotated[str | None, typer.Option(help="next_cursor of the previous page")] = None,
) -> None:
    """List dead letters, oldest first, with OpenMeter's error for each."""
    params: dict[str, str | int] = {"limit": limit}
    if cursor:
        params["cursor"] = cursor
    with admin_client() as http:
        show(http.get("/admin/deadletters", params=params))


@app.command()
@admin_command
def retry(
    ids: Annotated[list[str] | None, typer.Argument(help="Dead letter ids (from list)")] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Retry every dead letter (1000 a call, repeated)")
    ] = False,
) -> None:
    """Put dead letters back in the outbox; the next flush sends them (same id and source)."""
    if bool(ids) == all_:
        raise typer.BadParameter("give dead letter ids, or --all")
    with admin_client() as http:
        if ids:
            show(http.post("/admin/deadletters/retry", json={"ids": ids}))
            return
        while True:
            payload = show(http.post("/admin/deadletters/retry", json={"all": True}))
            if not payload.get("more") or not payload.get("retried"):
                return
