"""`meterbridge status` while the flush fills a stream gap (docs/flush.md)."""

from __future__ import annotations

from meterbridge.models.status import Breakers, OutboxStatus, RecoveryWindow, Status
from meterbridge_dev.cli.status import render


def _status(recovery: list[RecoveryWindow]) -> Status:
    return Status(
        checked_at="2026-12-05T12:00:00.000Z",
        period="2026-12",
        outbox=OutboxStatus(pending=0, recovery=recovery),
        dead_letters=0,
        breakers=Breakers(),
        top_tenants=[],
    )


def test_an_open_recovery_window_is_shown_and_needs_attention() -> None:
    # Given an outbox with nothing pending but a stream gap being filled
    gap = RecoveryWindow(
        shard="shardId-1",
        accepted_from="2026-12-03T11:50:00.000Z",
        accepted_to="2026-12-05T11:40:01.000Z",
        opened_at="2026-12-05T12:00:00.000Z",
        scanned=2000,
        recovered=640,
    )

    # When the status is judged and rendered
    recovering, clear = _status([gap]), _status([])
    text = render(recovering)

    # Then it is not healthy while the gap is open, and the report names the window
    assert (recovering.healthy, clear.healthy) == (False, True)
    assert "stream gap" in text and "2026-12-03T11:50:00.000Z" in text and "2000 scanned" in text
    assert "stream gap" not in render(clear)
