"""The optional durable buffer: recorded events in a SQLite file until the server took them.

An event is inserted before ``record()`` returns and deleted once the server accepted it (or
refused it for good). WAL journal with ``synchronous=NORMAL``: a committed insert is in the
operating system's hands, so it survives the process being killed (SIGKILL, OOM) though not
a power cut. A crash between the server's answer and the delete replays events the server
already has; their ids are unchanged, so the server counts them once (at-least-once
delivery, exactly-once counting). One client per file.
"""

from __future__ import annotations

import sqlite3
import threading


class DurableBuffer:
    def __init__(self, path: str) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS pending (row INTEGER PRIMARY KEY, body BLOB NOT NULL)"
        )

    def add(self, body: bytes) -> int:
        with self._lock:
            cur = self._db.execute("INSERT INTO pending (body) VALUES (?)", (body,))
            return int(cur.lastrowid or 0)

    def remove(self, rows: list[int]) -> None:
        if not rows:
            return
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM pending WHERE row = ?", [(r,) for r in rows])
            self._db.execute("COMMIT")

    def load(self) -> list[tuple[int, bytes]]:
        with self._lock:
            return [
                (int(r), bytes(b))
                for r, b in self._db.execute("SELECT row, body FROM pending ORDER BY row")
            ]

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM pending").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
