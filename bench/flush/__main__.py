"""Events/s the flush delivers to a loopback OpenMeter-compatible server, beside a baseline.

All cases run in one process, against one sink process, on the same prebuilt events and
batches (same JSON, same batch size, same number of threads):

- ``baseline``: the batches POSTed with plain httpx; no retries, no breaker, no DynamoDB.
- ``delivery``: the same batches through ``OpenMeterClient.send_batch`` (the flush's adapter:
  deadline, retries, circuit breaker, headers); the OpenMeter delivery path alone.
- ``end to end``: ``flush_outbox`` draining an outbox of ``--n`` events on a moto server (shard
  lease, page query, claim transaction, POST, mark transaction, remaining count).

Where the end-to-end time goes: thread-time per DAL phase (summed over threads), and the CPU
seconds the moto server, the sink and this process used during the run (2 vCPUs are shared).

    python -m bench.flush [--n 10000] [--batch 100] [--concurrency 4] [--page 50] [--segment 97]

Goals (issue 5): >= 5,000 events/s per invocation (the end-to-end case) and >= 0.7x the
baseline (the delivery case: the same prebuilt batches, docs/performance/flush.md).
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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "om_bench_key"
GOAL_EPS, GOAL_RATIO = 5000.0, 0.7


def start_sink() -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "shared"), str(ROOT / "dev")])}
    command = [sys.executable, "-m", "meterbridge_dev.fakes.openmeter_sink", "--port", "0"]
    proc = subprocess.Popen(
        [*command, "--api-key", API_KEY],
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


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class PhaseTimer:
    """Thread-time spent in each phase of the flush (wraps the outbox functions)."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def wrap(self, owner: Any, name: str, phase: str) -> None:
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                with self._lock:
                    self.totals[phase] += time.perf_counter() - t0
                    self.calls[phase] += 1

        setattr(owner, name, timed)


def timed_parallel(fn: Callable[[list[str]], Any], batches: list[list[str]], threads: int) -> float:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(fn, batches))
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.flush")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--page", type=int, default=50, help="segments per page query")
    parser.add_argument("--segment", type=int, default=97, help="events per outbox segment")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT / "shared"))
    sys.path.insert(0, str(ROOT / "dev"))
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
    from meterbridge_dev.stack.processes import MotoServer

    moto = MotoServer().start()
    sink_proc, sink_url = start_sink()
    os.environ["AWS_ENDPOINT_URL"] = moto.url
    os.environ["OPENMETER_BASE_URL"] = sink_url
    try:
        run(args, sink_url, moto_pid=moto.proc.pid if moto.proc else 0, sink_pid=sink_proc.pid)
    finally:
        sink_proc.terminate()
        sink_proc.wait(10)
        moto.stop()


def run(args: argparse.Namespace, sink_url: str, *, moto_pid: int, sink_pid: int) -> None:
    from tests.support.flush import fill_outbox, make_events

    from meterbridge.adapters.openmeter import BATCH_CONTENT_TYPE, OpenMeterClient, batch_body
    from meterbridge.dal import dynamo, outbox
    from meterbridge.logic import flush
    from meterbridge.settings import get_settings
    from meterbridge_dev.stack.tables import create_tables

    n, threads = args.n, args.concurrency
    events = make_events(n, prefix=f"b{uuid.uuid4().hex[:4]}")
    wire = [outbox.outbox_item(e, tenant_id="t1", kind="usage")["event"] for e in events]
    batches = [wire[i : i + args.batch] for i in range(0, len(wire), args.batch)]

    # 1. Baseline: the batches, plain httpx.
    with httpx.Client(
        base_url=sink_url,
        headers={"Content-Type": BATCH_CONTENT_TYPE, "Authorization": f"Bearer {API_KEY}"},
        limits=httpx.Limits(max_connections=threads),
    ) as http:

        def plain(batch: list[str]) -> None:
            status = http.post("/api/v1/events", content=batch_body(batch)).status_code
            assert status == 204, status

        plain(batches[0])  # warm the connection
        reset_sink(sink_url)
        base_s = timed_parallel(plain, batches, threads)
    assert sink_unique(sink_url) == n

    # 2. Delivery path alone: the same batches through the flush's adapter.
    client = OpenMeterClient(sink_url, API_KEY, timeout_s=10.0, max_connections=threads)
    client.send_batch(batches[0])
    reset_sink(sink_url)
    deliver_s = timed_parallel(lambda b: client.send_batch(b), batches, threads)
    assert sink_unique(sink_url) == n

    # 3. End to end: the outbox on moto, the same events.
    reset_sink(sink_url)
    names = {"EventsTable": f"bench-events-{uuid.uuid4().hex[:6]}"}
    names["IdempotencyTable"] = f"bench-idem-{uuid.uuid4().hex[:6]}"
    create_tables(dynamo.client(), names)
    os.environ["EVENTS_TABLE"] = names["EventsTable"]
    os.environ["IDEMPOTENCY_TABLE"] = names["IdempotencyTable"]
    get_settings.cache_clear()
    t_fill = time.perf_counter()
    # Segments as ingest writes them for full batches: 97 events (100 transaction items, less
    # the segment and one counter).
    fill_outbox(names["EventsTable"], events, segment_size=args.segment)
    fill_s = time.perf_counter() - t_fill

    timer = PhaseTimer()
    timer.wrap(outbox, "acquire_shard", "shard lease (UpdateItem)")
    timer.wrap(outbox, "release_shard", "shard release (DeleteItem)")
    timer.wrap(outbox, "pending_page", "page query (outbox index)")
    timer.wrap(outbox, "claim_many", "claim (TransactWriteItems)")
    timer.wrap(outbox, "mark_sent_many", "mark sent (TransactWriteItems)")
    timer.wrap(outbox, "count_pending", "count remaining (8 queries)")
    timer.wrap(client, "send_batch", "POST to the sink (adapter)")
    config = flush.FlushConfig(batch_size=args.batch, concurrency=threads, page_size=args.page)
    cpu0 = (cpu_s(moto_pid), cpu_s(sink_pid), time.process_time())
    t0 = time.perf_counter()
    sent, runs = 0, 0
    while True:
        result = flush.flush_outbox(config=config, client=client)
        sent += result.sent
        runs += 1
        if result.remaining == 0 or runs > 5:
            break
    e2e_s = time.perf_counter() - t0
    cpu1 = (cpu_s(moto_pid), cpu_s(sink_pid), time.process_time())
    assert sent == n and sink_unique(sink_url) == n, (sent, sink_unique(sink_url))
    assert not sink_resent(sink_url)

    base_eps = n / base_s
    print(
        f"events={n} batch={args.batch} threads={threads} segment={args.segment} events"
        f" page={args.page} segments cpus={os.cpu_count()}"
        " (moto server and sink in their own processes, on loopback)"
    )
    print(f"{'case':<46}{'seconds':>9}{'events/s':>10}{'vs base':>9}  goals")
    rows = [
        ("baseline: plain httpx POSTs", base_s),
        ("delivery: OpenMeterClient.send_batch", deliver_s),
        (f"end to end: flush_outbox on moto ({runs} run)", e2e_s),
    ]
    # The goals as docs/performance/flush.md reads them: the 0.7x ratio compares like with
    # like (the same prebuilt batches POSTed by the flush's sender and by plain httpx); the
    # 5,000/s is a whole invocation's rate, DynamoDB included (its ratio is shown, not judged:
    # the baseline does no DynamoDB work at all).
    missed = []
    for label, secs in rows:
        eps = n / secs
        ratio = eps / base_eps
        goals = ""
        if label.startswith("delivery"):
            ok = ratio >= GOAL_RATIO
            goals = f">=0.7x baseline: {'met' if ok else 'MISSED'}"
        elif label.startswith("end to end"):
            ok = eps >= GOAL_EPS
            goals = f">=5,000/s per invocation: {'met' if ok else 'MISSED'}"
        else:
            ok = True
        if not ok:
            missed.append(label)
        print(f"{label:<46}{secs:>9.2f}{eps:>10.0f}{ratio:>9.3f}  {goals}")
    print(f"(outbox fill by BatchWriteItem, not timed above: {fill_s:.2f}s)")
    print("end to end, thread-time per phase (summed over threads):")
    for phase, secs in sorted(timer.totals.items(), key=lambda kv: -kv[1]):
        calls = timer.calls[phase]
        print(
            f"  {phase:<38}{secs:>7.2f}s {calls:>6} calls {secs / calls * 1000:>8.1f} ms/call"
            f" {secs / n * 1000:>7.3f} ms/event"
        )
    moto_cpu, sink_cpu, own_cpu = (b - a for a, b in zip(cpu0, cpu1, strict=True))
    print(
        f"end to end, CPU during the run ({e2e_s:.2f}s wall): moto server {moto_cpu:.2f}s"
        f" ({moto_cpu / e2e_s:.0%} of a core, {moto_cpu / n * 1000:.3f} ms/event),"
        f" flush process {own_cpu:.2f}s, sink {sink_cpu:.2f}s"
    )
    print("\n" + ("all goals met" if not missed else "goals missed: " + "; ".join(missed)))


def sink_resent(url: str) -> bool:
    return bool(httpx.get(f"{url}/_control/stats").json()["resent"])


if __name__ == "__main__":
    main()
