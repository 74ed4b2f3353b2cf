"""``meterbridge status``: the backlog, dead letters, last flush, breakers and top tenants.

It reads DynamoDB directly (not the admin API), with the operator's AWS credentials and the
table names from the environment (``EVENTS_TABLE``, ``USAGE_TABLE``, ``IDEMPOTENCY_TABLE``:
the stack's outputs). It needs ``dynamodb:Query`` on the events table's ``outbox`` and
``deadletters`` indexes, ``dynamodb:GetItem`` on the idempotency table and ``dynamodb:Scan``
on the usage table. Exit status 1 when something needs attention (for scripts and cron).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from meterbridge.logic.status import Status, collect_status


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def render(status: Status) -> str:
    """The human-readable report."""
    out = status.outbox
    lines = [
        f"meterbridge status at {status.checked_at} (period {status.period})",
        f"  overall:        {'OK' if status.healthy else 'ATTENTION'}",
        f"  outbox pending: {out.pending}"
        + (
            f" (oldest {_age(out.oldest_pending_age_s)}, accepted {out.oldest_pending_at},"
            f" tenant {out.oldest_pending_tenant or '-'})"
            if out.oldest_pending_at
            else ""
        ),
        f"  dead letters:   {status.dead_letters}"
        + ("  -> meterbridge deadletters list" if status.dead_letters else ""),
    ]
    flush = status.last_flush
    if flush is None:
        lines.append("  last flush:     none recorded")
    else:
        lines.append(
            f"  last flush:     {'ok' if flush.ok else 'FAILED (' + str(flush.stopped) + ')'}"
            f" {_age(flush.age_s)} ago: sent {flush.sent}, retried {flush.retried},"
            f" dead-lettered {flush.dead_lettered}, remaining {flush.remaining},"
            f" {flush.duration_ms} ms"
        )
    b = status.breakers
    nats = b.nats or ("unknown (" + b.nats_error + ")" if b.nats_error else "not checked")
    lines.append(f"  breakers:       openmeter {b.openmeter or 'unknown'}, nats {nats}")
    lines.append("  top tenants by usage this period:")
    if not status.top_tenants:
        lines.append("    (no usage recorded)")
    for row in status.top_tenants:
        lines.append(f"    {row.tenant_id:<24} {row.meter:<12} {row.used:>14,}")
    return "\n".join(lines)


def status(
    top: Annotated[int, typer.Option(min=1, max=100, help="Tenants to list")] = 10,
    streaming_url: Annotated[
        str | None,
        typer.Option(help="Base URL of a streaming task, to read its NATS breaker from /metrics"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Outbox backlog and oldest pending age, dead letters, last flush, breakers, top tenants."""
    result = collect_status(top=top, streaming_url=streaming_url)
    typer.echo(json.dumps(result.model_dump(), indent=2) if as_json else render(result))
    if not result.healthy:
        raise typer.Exit(1)
