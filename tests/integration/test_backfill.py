"""``meterbridge backfill``: batches, dedupe, bad-line isolation, summary (issue 5).

The ingest logic (``meterbridge.logic.ingest``) is being written in parallel; until it lands
this test installs a stand-in with the same contract that validates and enqueues into the
real outbox on the moto server (docs/flush.md, Backfill).
"""

from __future__ import annotations

import json
import sys
import types
from typing import Any

from typer.testing import CliRunner

from meterbridge.dal import outbox
from meterbridge.dal import status as status_dal
from meterbridge.errors import ValidationFailed
from meterbridge.models.cloudevent import CloudEvent, usage_source
from meterbridge.settings import get_settings
from meterbridge_dev.cli.main import app as cli


def stand_in_ingest(calls: list[int]) -> types.ModuleType:
    def ingest_events(tenant_id: str, events: list[dict[str, Any]], **kw: Any) -> dict[str, int]:
        calls.append(len(events))
        bad = [i for i, e in enumerate(events) if not e.get("id") or not e.get("type")]
        if bad:
            raise ValidationFailed("invalid events", details=[{"index": i} for i in bad])
        accepted = duplicates = 0
        for e in events:
            event = CloudEvent(source=usage_source(tenant_id), **e)
            new = outbox.enqueue(
                get_settings().events_table, event, tenant_id=tenant_id, kind="usage"
            )
            accepted, duplicates = accepted + new, duplicates + (not new)
        return {"accepted": accepted, "duplicates": duplicates}

    module = types.ModuleType("meterbridge_dev.backfill")
    module.ingest_events = ingest_events  # type: ignore[attr-defined]
    return module


def test_backfill_imports_dedupes_and_reports_bad_lines(aws, tmp_path, monkeypatch):
    # Given: 250 old events, 10 repeated, one line without a type, one not JSON
    calls: list[int] = []
    monkeypatch.setitem(sys.modules, "meterbridge_dev.backfill", stand_in_ingest(calls))
    lines = [
        json.dumps(
            {"id": f"h{i}", "type": "api.request", "subject": "c", "time": "2025-01-02T00:00:00Z"}
        )
        for i in range(250)
    ]
    lines += lines[:10]
    lines.insert(120, json.dumps({"id": "broken", "subject": "c"}))
    lines.insert(7, "{not json")
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")

    # When
    result = CliRunner().invoke(cli, ["backfill", "--tenant", "t9", "--file", str(path)])
    again = CliRunner().invoke(cli, ["backfill", "--tenant", "t9", "--file", str(path)])

    # Then
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert result.exit_code == 1  # some lines were invalid
    assert summary["read"] == 262 and summary["accepted"] == 250
    assert summary["duplicates"] == 10 and summary["invalid"] == 2
    assert sorted(e["line"] for e in summary["errors"]) == [8, 122]
    rerun = json.loads(again.stdout[again.stdout.index("{") :])
    assert rerun["accepted"] == 0 and rerun["duplicates"] == 260
    assert status_dal.count_pending(aws["EventsTable"], aws["IdempotencyTable"]) == 250
