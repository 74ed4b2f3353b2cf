"""Events/s the flush delivers to a loopback OpenMeter-compatible server, beside a baseline.

Both run in the same process, against the same sink process, on the same prebuilt events:

- ``flush``: ``flush_outbox`` draining an outbox of ``--n`` events on a moto server (claim
  with a lease, POST the batch, mark sent; ``--concurrency`` batches in flight).
- ``baseline``: the same batches (same JSON, same batch size) POSTed with plain httpx from the
  same number of threads; no DynamoDB at all.
- ``moto only``: the flush's DynamoDB calls alone (claim + mark per event), to show where the
  time goes; the per-phase thread-time split is printed too.

    python -m bench.flush [--n 5000] [--batch 100] [--concurrency 8]

Goals (issue 5): >= 5,000 events/s per invocation and >= 0.7x the baseline.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "om_bench_key"
GOAL_EPS, GOAL_RATIO = 5000.0, 0.7


def start_sink() -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "shared")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "meterbridge.local.openmeter_sink",
            "--port",
            "0",
            "--api-key",
            API_KEY,
        ],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    return proc, line.removeprefix("listening on ")


def reset_sink(url: str) -> None:
    httpx.post(f"{url}/_control/reset")


def sink_unique(url: str) -> int:
    return int(httpx.get(f"{url}/_control/stats").json()["unique_events"])


class PhaseTimer:
    """Thread-time spent in each DAL phase of the flush (wraps the outbox functions)."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    def wrap(self, module: Any, name: str, phase: str) -> None:
        original = getattr(module, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                with self._lock:
                    self.totals[phase] += time.perf_counter() - t0

        setattr(module, name, timed)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.flush")
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT / "shared"))
    sys.path.insert(0, str(ROOT))
    os.environ.update(
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        OPENMETER_ENABLED="true",
        OPENMETER_API_KEY=API_KEY,
        NATS_ENABLED="false",
        POWERTOOLS_LOG_LEVEL="WARNING",
        POWERTOOLS_METRICS_DISABLED="true",
    )
    from meterbridge.local.processes import MotoServer

    moto = MotoServer().start()
    sink_proc, sink_url = start_sink()
    os.environ["AWS_ENDPOINT_URL"] = moto.url
    os.environ["OPENMETER_BASE_URL"] = sink_url
    try:
        run(args, sink_url)
    finally:
        sink_proc.terminate()
        sink_proc.wait(10)
        moto.stop()


def run(args: argparse.Namespace, sink_url: str) -> None:
    from tests.integration.test_flush_support import fill_outbox, make_events

    from meterbridge.adapters.openmeter import BATCH_CONTENT_TYPE, OpenMeterClient, batch_body
    from meterbridge.dal import dynamo, outbox
    from meterbridge.local.tables import create_tables
    from meterbridge.logic import flush
    from meterbridge.settings import get_settings

    def fresh_table() -> str:
        name = f"bench-events-{uuid.uuid4().hex[:6]}"
        create_tables(dynamo.client(), {"EventsTable": name})
        os.environ["EVENTS_TABLE"] = name
        get_settings.cache_clear()
        return name

    events = make_events(args.n, prefix=f"b{uuid.uuid4().hex[:4]}")
    wire = [outbox.outbox_item(e, tenant_id="t1", kind="usage")["event"] for e in events]
    batches = [wire[i : i + args.batch] for i in range(0, len(wire), args.batch)]

    # Baseline: the same batches, plain httpx, same parallelism.
    with httpx.Client(
        base_url=sink_url,
        headers={"Content-Type": BATCH_CONTENT_TYPE, "Authorization": f"Bearer {API_KEY}"},
        limits=httpx.Limits(max_connections=args.concurrency),
    ) as http:
        http.post("/api/v1/events", content=batch_body(batches[0]))  # warm the connection
        reset_sink(sink_url)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            statuses = list(
                pool.map(
                    lambda b: http.post("/api/v1/events", content=batch_body(b)).status_code,
                    batches,
                )
            )
        base_s = time.perf_counter() - t0
    assert set(statuses) == {204}, statuses
    assert sink_unique(sink_url) == args.n

    # Flush: the outbox on moto, the same events.
    reset_sink(sink_url)
    table = fresh_table()
    t_fill = time.perf_counter()
    fill_outbox(table, events)
    fill_s = time.perf_counter() - t_fill
    timer = PhaseTimer()
    timer.wrap(outbox, "pending_page", "query outbox index")
    timer.wrap(outbox, "claim", "claim (UpdateItem)")
    timer.wrap(outbox, "mark_sent", "mark sent (UpdateItem)")
    timer.wrap(outbox, "count_pending", "count remaining")
    client = OpenMeterClient(sink_url, API_KEY, timeout_s=10.0, max_connections=args.concurrency)
    original_send = client.send_batch

    def timed_send(*a: Any, **kw: Any) -> int:
        t0 = time.perf_counter()
        try:
            return original_send(*a, **kw)
        finally:
            with timer._lock:
                timer.totals["POST to sink"] += time.perf_counter() - t0

    client.send_batch = timed_send  # type: ignore[method-assign]
    config = flush.FlushConfig(batch_size=args.batch, concurrency=args.concurrency, page_size=1000)
    t0 = time.perf_counter()
    sent = 0
    runs = 0
    while True:
        result = flush.flush_outbox(config=config, client=client)
        sent += result.sent
        runs += 1
        if result.remaining == 0 or runs > 5:
            break
    flush_s = time.perf_counter() - t0
    assert sent == args.n and sink_unique(sink_url) == args.n, (sent, sink_unique(sink_url))

    base_eps = args.n / base_s
    flush_eps = args.n / flush_s
    ratio = flush_eps / base_eps
    print(
        f"events={args.n} batch={args.batch} concurrency={args.concurrency}"
        " (moto server and sink in their own processes)"
    )
    print(f"{'case':<34}{'seconds':>10}{'events/s':>12}")
    print(f"{'baseline: plain httpx POSTs':<34}{base_s:>10.2f}{base_eps:>12.0f}")
    print(f"{'flush (claim, POST, mark)':<34}{flush_s:>10.2f}{flush_eps:>12.0f}")
    print(f"ratio flush/baseline: {ratio:.3f} (goal >= {GOAL_RATIO})")
    print(f"flush events/s: {flush_eps:.0f} (goal >= {GOAL_EPS:.0f})")
    print(f"(outbox fill by BatchWriteItem, not timed above: {fill_s:.2f}s)")
    print("where the flush's thread-time went (summed over threads):")
    for phase, secs in sorted(timer.totals.items(), key=lambda kv: -kv[1]):
        print(f"  {phase:<30}{secs:>8.2f}s  {secs / args.n * 1000:>7.3f} ms/event")


if __name__ == "__main__":
    main()
