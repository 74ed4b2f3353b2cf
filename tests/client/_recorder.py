"""A recording process for the durable-buffer test: ``python -m tests.client._recorder URL KEY
DB IDS N``. Records N events with the durable buffer at DB, writes their ids to IDS, prints
``recorded`` and keeps running (sending, retrying) until it is killed."""

from __future__ import annotations

import os
import sys
import time

from meterbridge_client import Client


def main() -> None:
    url, key, db, ids_path, n = sys.argv[1:6]
    client = Client(
        key,
        url,
        durable_path=db,
        max_batch_events=100,
        flush_interval=0.05,
        backoff_base=0.05,
        backoff_max=0.5,
        close_at_exit=False,
    )
    ids = [client.record("api.call", {"n": i}) for i in range(int(n))]
    with open(ids_path, "w") as out:
        out.write("\n".join(ids))
        out.flush()
        os.fsync(out.fileno())
    print("recorded", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
