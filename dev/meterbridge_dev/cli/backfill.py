"""``meterbridge backfill --tenant T --file events.jsonl``: import historical usage events.

Each line is one event as the usage API takes it (``id``, ``type``, ``time``, ``subject``,
``data``). Lines go through the ingest logic itself (validation, dedupe on ``(source, id)``,
outbox), in batches, so a backfill re-run is harmless: events already stored count as
duplicates. Backfill policy (docs/flush.md): events older than the 35-day late-event window
are accepted up to ``--max-age-days``; the flush delivers them like any other event.

A batch is validated whole by ingest; when one fails, its lines are retried one by one so a
bad line is reported (line number and reason) without holding back the good ones.

The ingest entry is ``meterbridge_dev.backfill.ingest_events(tenant_id, events, *,
backfill, max_age_days)``: it returns ``accepted`` and ``duplicates`` and raises
``ValidationFailed`` on an invalid batch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from meterbridge.errors import MeterbridgeError, ValidationFailed

DEFAULT_BATCH = 100


def _ingest_function() -> Callable[..., Any]:
    # Imported late: the CLI starts fast and only this command needs DynamoDB.
    from meterbridge_dev.backfill import ingest_events

    return ingest_events


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield number, line


def _count(result: Any, name: str) -> int:
    value = result.get(name, 0) if isinstance(result, dict) else getattr(result, name, 0)
    return int(value or 0)


class Summary:
    def __init__(self) -> None:
        self.read = self.accepted = self.duplicates = 0
        self.invalid: list[dict[str, Any]] = []

    def as_dict(self, tenant: str) -> dict[str, Any]:
        return {
            "tenant": tenant,
            "read": self.read,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "invalid": len(self.invalid),
            "errors": self.invalid[:100],
        }


def run_backfill(
    tenant: str,
    path: Path,
    *,
    ingest: Callable[..., Any],
    batch_size: int = DEFAULT_BATCH,
    max_age_days: int = 400,
    on_progress: Callable[[int], None] | None = None,
) -> Summary:
    """Feed ``path`` to ``ingest`` in batches; isolate invalid lines. Returns the summary."""
    summary = Summary()

    def call(batch: list[tuple[int, dict[str, Any]]]) -> None:
        result = ingest(tenant, [e for _, e in batch], backfill=True, max_age_days=max_age_days)
        summary.accepted += _count(result, "accepted")
        summary.duplicates += _count(result, "duplicates")

    def flush(batch: list[tuple[int, dict[str, Any]]]) -> None:
        if not batch:
            return
        try:
            call(batch)
        except ValidationFailed:
            for line, event in batch:
                try:
                    call([(line, event)])
                except ValidationFailed as exc:
                    summary.invalid.append(
                        {"line": line, "message": exc.message, "details": exc.details}
                    )
        if on_progress:
            on_progress(len(batch))

    batch: list[tuple[int, dict[str, Any]]] = []
    for number, line in _lines(path):
        summary.read += 1
        try:
            event = json.loads(line)
            if not isinstance(event, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            summary.invalid.append({"line": number, "message": f"invalid JSON: {exc}"})
            if on_progress:
                on_progress(1)
            continue
        batch.append((number, event))
        if len(batch) >= batch_size:
            flush(batch)
            batch = []
    flush(batch)
    return summary


def backfill(
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant id the events belong to")],
    file: Annotated[
        Path,
        typer.Option("--file", exists=True, dir_okay=False, readable=True, help="JSON Lines file"),
    ],
    batch_size: Annotated[int, typer.Option(min=1, max=1000, help="Events per ingest call")] = (
        DEFAULT_BATCH
    ),
    max_age_days: Annotated[
        int, typer.Option(min=1, max=3650, help="Oldest event accepted, in days")
    ] = 400,
) -> None:
    """Import historical events through ingest's validation and dedupe, with a progress bar.

    Against the running ``meterbridge dev`` (its state file), else the tables the environment
    names."""
    from rich.console import Console

    from meterbridge_dev.cli.state import use_local_stack

    use_local_stack()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    total = sum(1 for _ in _lines(file))
    console = Console(stderr=True)
    try:
        ingest = _ingest_function()
    except (ImportError, AttributeError) as exc:
        console.print(f"[red]ingest logic is not available: {exc}[/red]")
        raise typer.Exit(2) from exc
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(f"backfill {tenant}", total=total)
        try:
            summary = run_backfill(
                tenant,
                file,
                ingest=ingest,
                batch_size=batch_size,
                max_age_days=max_age_days,
                on_progress=lambda n: progress.advance(task, n),
            )
        except MeterbridgeError as exc:
            console.print(f"[red]backfill stopped: {exc.message}[/red]")
            raise typer.Exit(1) from exc
    typer.echo(json.dumps(summary.as_dict(tenant), indent=2))
    if summary.invalid:
        raise typer.Exit(1)
