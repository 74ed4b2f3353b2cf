"""``meterbridge backfill`` through the real ingest: historical periods, dedupe, bad lines."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from meterbridge.dal import usage as usage_dal
from meterbridge.logic.periods import period_of
from meterbridge.settings import get_settings
from meterbridge_dev.backfill import ingest_events
from meterbridge_dev.cli.backfill import run_backfill
from tests.support.builders import make_tenant


def test_backfill_counts_history_in_its_own_period_and_is_rerunnable(
    aws: dict[str, str], tmp_path: Path
) -> None:
    # Given 90-day-old events (past the live 35-day window), a duplicate line and a bad line
    tenant, _ = make_tenant("basic")
    old = datetime.now(UTC) - timedelta(days=90)
    lines = [
        json.dumps({"id": f"h{i}", "type": "api.call", "time": old.isoformat()}) for i in range(30)
    ]
    lines += [lines[0], json.dumps({"id": "bad"})]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    # When it is backfilled twice
    first = run_backfill(tenant, path, ingest=ingest_events, batch_size=10)
    second = run_backfill(tenant, path, ingest=ingest_events, batch_size=10)
    # Then the 30 events are stored once, counted in their own month, and the bad line reported
    assert (first.accepted, first.duplicates, len(first.invalid)) == (30, 1, 1)
    assert first.invalid[0]["line"] == 32
    assert (second.accepted, second.duplicates) == (0, 31)
    table = get_settings().usage_table
    assert usage_dal.used(table, tenant, period_of(old), "api_calls") == 30
    assert usage_dal.used(table, tenant, period_of(datetime.now(UTC)), "api_calls") == 0
