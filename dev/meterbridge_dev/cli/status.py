"""``meterbridge status``: the backlog, dead letters, last flush, breakers and top tenants.

It reads DynamoDB directly (not the admin API). Where: a deployed stack with ``--stack-name`` or
``--config-env`` (table names from its CloudFormation outputs, the operator's AWS credentials,
``--profile``, ``--region``); otherwise the running local stack (its state file names the
DynamoDB endpoint and tables); otherwise the table names in the environment (``EVENTS_TABLE``,
``USAGE_TABLE``, ``IDEMPOTENCY_TABLE``). It needs ``dynamodb:Query`` on the events table's
``outbox`` and ``deadletters`` indexes, ``dynamodb:GetItem`` on the idempotency table and
``dynamodb:Scan`` on the usage table. Exit status 1 when something needs attention (for
scripts and cron).
"""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer

from meterbridge.errors import MeterbridgeError
from meterbridge.logic.status import collect_status
from meterbridge.models.status import Status
from meterbridge_dev.cli.target import CliError


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
    for gap in out.recovery:
        lines.append(
            f"  stream gap:     recovering events accepted {gap.accepted_from or 'any time'}"
            f" to {gap.accepted_to} from their records (shard {gap.shard}, {gap.scanned}"
            f" scanned, {gap.recovered} re-sent; the flush does it, no action needed)"
        )
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


TABLE_OUTPUTS = {
    "TENANTS_TABLE": "TenantsTableName",
    "EVENTS_TABLE": "EventsTableName",
    "USAGE_TABLE": "UsageTableName",
    "IDEMPOTENCY_TABLE": "IdempotencyTableName",
}
TABLE_STATE = {
    "TENANTS_TABLE": "tenants",
    "EVENTS_TABLE": "events",
    "USAGE_TABLE": "usage",
    "IDEMPOTENCY_TABLE": "idempotency",
}


def _point_at(
    stack_name: str | None, config_env: str | None, profile: str | None, region: str | None
) -> None:
    """Aim this process's DynamoDB client at the deployed or the local stack's tables."""
    from meterbridge.dal import dynamo
    from meterbridge.settings import get_settings
    from meterbridge_dev.cli.state import read_state, state_path
    from meterbridge_dev.cli.target import samconfig_stack_name, stack_outputs

    if stack_name or config_env:
        stack = stack_name or samconfig_stack_name(config_env)
        outputs, stack_region = stack_outputs(stack, profile, region)
        missing = [o for o in TABLE_OUTPUTS.values() if o not in outputs]
        if missing:
            raise CliError(f"stack {stack} has no {missing[0]} output (is it a meterbridge stack?)")
        for var, output in TABLE_OUTPUTS.items():
            os.environ[var] = outputs[output]
        os.environ["AWS_DEFAULT_REGION"] = stack_region
        if profile:
            os.environ["AWS_PROFILE"] = profile
    else:
        state = read_state()
        if state is not None:
            os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = str(state["dynamodb"])
            os.environ.setdefault("AWS_DEFAULT_REGION", str(state.get("region", "us-east-1")))
            # moto accepts any credentials; a shell without any still reads the local stack.
            os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
            os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
            for var, key in TABLE_STATE.items():
                os.environ[var] = str(state["tables"][key])
        elif not os.environ.get("EVENTS_TABLE"):
            raise CliError(
                f"the local stack is not running (no {state_path()}): start it with"
                " `meterbridge dev`, or pass --stack-name"
            )
    get_settings.cache_clear()
    dynamo.reset_clients()


def status(
    top: Annotated[int, typer.Option(min=1, max=100, help="Tenants to list")] = 10,
    streaming_url: Annotated[
        str | None,
        typer.Option(help="Base URL of a streaming task, to read its NATS breaker from /metrics"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    stack_name: Annotated[
        str | None,
        typer.Option("--stack-name", envvar="METERBRIDGE_STACK_NAME", help="Deployed stack"),
    ] = None,
    config_env: Annotated[
        str | None, typer.Option("--config-env", help="samconfig.toml environment of the stack")
    ] = None,
    profile: Annotated[str | None, typer.Option("--profile", help="AWS profile")] = None,
    region: Annotated[str | None, typer.Option("--region", help="AWS region")] = None,
) -> None:
    """Outbox backlog and oldest pending age, dead letters, last flush, breakers, top tenants."""
    try:
        _point_at(stack_name, config_env, profile, region)
        result = collect_status(top=top, streaming_url=streaming_url)
    except CliError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(exc.code) from exc
    except MeterbridgeError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(json.dumps(result.model_dump(), indent=2) if as_json else render(result))
    if not result.healthy:
        raise typer.Exit(1)
