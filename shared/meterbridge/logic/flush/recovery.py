"""Fill the stream gaps the reader recorded: Scan the event records accepted in each window,
page by page from its progress checkpoint, and deliver (or park) them; a window closes when
its Scan ends (docs/flush.md#when-the-stream-trimmed-a-checkpoint)."""

from __future__ import annotations

import contextlib

from meterbridge.dal.outbox import recovery
from meterbridge.errors import StorageUnavailable
from meterbridge.logic.flush.config import Run
from meterbridge.logic.flush.reader import StreamReader
from meterbridge.observability import logger


class Recovery:
    def __init__(self, run: Run, reader: StreamReader, *, table: str, lease_table: str) -> None:
        self.run = run
        self.reader = reader
        self.table = table
        self.lease_table = lease_table

    def fill_all(self) -> None:
        """Fill every open gap; the windows still open are counted in ``recovering``."""
        run = self.run
        open_windows = recovery.windows(self.lease_table, self.table)
        run.result.recovering = len(open_windows)
        for window in open_windows:
            if run.stopped_hard() or not run.can_start_request():
                return
            if not recovery.lease(
                self.lease_table,
                window,
                owner=run.owner,
                now_ms=run.now_ms(),
                lease_ms=run.lease_ms(),
            ):
                continue  # another run fills it
            try:
                if self._fill(window):
                    run.result.recovering -= 1
            finally:
                with contextlib.suppress(StorageUnavailable):
                    recovery.release(self.lease_table, window, owner=run.owner)

    def _fill(self, window: recovery.Window) -> bool:
        """Scan one window from its cursor; True once it is filled and closed."""
        run = self.run
        cursor = window.cursor
        while True:
            if run.stopped_hard() or not run.can_start_request():
                run.stop_run("deadline")
                return False
            found, nxt, scanned = recovery.scan_page(
                self.table, window, cursor, limit=run.config.recovery_page
            )
            acked = self.reader.send_or_park(found)
            if acked is None:
                return False
            run.add(sent=acked, recovered=len(found))
            if nxt is None:
                if recovery.close(self.lease_table, window, owner=run.owner):
                    logger.info(
                        "stream gap recovered",
                        extra={"shard": window.shard, "events": window.recovered + len(found)},
                    )
                    return True
                return False
            if not recovery.advance(
                self.lease_table,
                window,
                cursor=nxt,
                scanned=scanned,
                recovered=len(found),
                owner=run.owner,
                now_ms=run.now_ms(),
                lease_ms=run.lease_ms(),
            ):
                return False
            cursor = nxt
