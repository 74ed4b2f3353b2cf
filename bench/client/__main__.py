"""meterbridge-client: record() latency and HTTP requests, and the server's DynamoDB units per
event, beside one plain ``httpx.post`` per event, in one run.

The server (usage API under uvicorn, moto server, OpenMeter sink, DynamoDB unit meter) runs in
its own process (``bench.client.server``) so the client's figures are not mixed with the
server's work. Method and analysis: docs/performance/client.md.

    python -m bench.client [--seconds 5] [--baseline 300]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import httpx
from meterbridge_client import Client

from bench.client import latency
from bench.client.latency import pct

ROOT = Path(__file__).resolve().parents[2]
RATE = 1000  # events/s, the reference load
GOAL_P99_US = 50.0
GOAL_FEWER = 100.0
GOAL_UNITS = 0.4


def paced(n: int, rate: float | None, call: Any) -> list[float]:
    """Sleep-paced (or back to back when ``rate`` is None) wall time per call, us."""
    return latency.paced(n, rate, call).wall


def loop_mean(n: int, call: Any) -> float:
    """The second measure: n calls back to back, one clock read around them all (no per-call
    timer), microseconds per call."""
    t0 = time.perf_counter_ns()
    for i in range(n):
        call(i)
    return (time.perf_counter_ns() - t0) / n / 1000


def mean(samples: list[float]) -> float:
    return sum(samples) / len(samples)


def one_event(i: int, tag: str) -> dict[str, Any]:
    return {"id": f"{tag}-{i}-{os.getpid()}", "type": "api.call", "data": {"tokens": i % 977}}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0, help="client run at 1,000 ev/s")
    parser.add_argument("--baseline", type=int, default=300, help="one-event requests")
    args = parser.parse_args()
    children: list[subprocess.Popen[str]] = []
    try:
        info = start(children, "bench.client.server")
        stub = start(children, "bench.client.stub")
        return run(info["url"], info["key"], stub["url"], args)
    finally:
        stop(children)


def stop(children: list[subprocess.Popen[str]]) -> None:
    for child in children:
        if child.stdin:
            child.stdin.close()
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()


def start(children: list[subprocess.Popen[str]], module: str) -> dict[str, str]:
    """A child process that prints one JSON line, then serves until its stdin closes."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "shared"), str(ROOT)])}
    child = subprocess.Popen(
        [sys.executable, "-m", module],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    children.append(child)
    assert child.stdout is not None
    return json.loads(child.stdout.readline())


def run(url: str, key: str, stub_url: str, args: argparse.Namespace) -> int:
    auth = {"Authorization": f"Bearer {key}"}
    http = httpx.Client(base_url=url, headers=auth, timeout=30)

    def units() -> dict[str, Any]:
        return http.get("/_bench/units").json()

    def flush_units() -> dict[str, Any]:
        units()
        http.post("/_bench/flush", timeout=120).raise_for_status()
        return units()

    # Warm-up: the key lookup is cached after the first request; connections are open.
    assert http.post("/v1/events", json=one_event(0, "warm")).status_code == 202
    flush_units()
    n_client = int(args.seconds * RATE)

    # -- 1. latency and requests at 1,000 events/s -------------------------------------------
    client = Client(key, url, close_at_exit=False)
    client_lat = paced(n_client, RATE, lambda i: client.record("api.call", {"tokens": i % 977}))
    assert client.flush(timeout=120)
    client.close()
    mem = client.stats()
    ingest_batched = units()
    flush_batched = flush_units()

    # The same load with the server elsewhere (a stub answering 202 at once, in its own
    # process): the client's own cost, without the co-located stack's CPU on these cores.
    # Beside it, on the same schedule and interleaved round by round (so load that comes and
    # goes hits all alike): record() with its sender held back, an empty call, json.dumps of
    # the event; each paced by sleep and by spin (bench/client/latency.py).
    rounds = 5
    paced_out, tight, rem_running = latency.measure(
        stub_url, key, rounds, n_client // rounds, n_client // rounds
    )
    remote = Client(key, stub_url, close_at_exit=False)
    # Unpaced, the same client: back to back, per call, then the second way (total / count).
    # The sender encodes and posts meanwhile, so both include its share of the GIL.
    assert not tracemalloc.is_tracing()
    tight_lat = paced(n_client, None, lambda i: remote.record("api.call", {"tokens": i % 977}))
    assert remote.flush(timeout=120)
    tight_mean = loop_mean(n_client, lambda i: remote.record("api.call", {"tokens": i % 977}))
    assert remote.flush(timeout=120)
    remote.close()
    rem = remote.stats()

    with tempfile.TemporaryDirectory() as tmp:
        durable = Client(key, url, durable_path=f"{tmp}/events.db", close_at_exit=False)
        n_durable = n_client // 2
        durable_lat = paced(n_durable, RATE, lambda i: durable.record("api.call", {"tokens": i}))
        assert durable.flush(timeout=120)
        durable.close()
    dur = durable.stats()
    units()
    flush_units()

    n_base = args.baseline
    started = time.perf_counter()
    base_lat = paced(
        n_base,
        RATE,
        lambda i: http.post("/v1/events", json=one_event(i, "base")).raise_for_status(),
    )
    base_rate = n_base / (time.perf_counter() - started)
    ingest_single = units()
    flush_single = flush_units()

    # -- report --------------------------------------------------------------------------------
    ok = True
    print(
        f"record() at {RATE:,} events/s for {args.seconds:g} s vs one httpx.post per event "
        "(server in its own process: usage API under uvicorn, moto server on loopback)"
    )
    print(
        f"{'case':46} {'events':>7} {'p50 us':>8} {'p99 us':>8} {'p99.9 us':>9} {'mean us':>8} "
        f"{'req/1k ev':>10}  goal"
    )
    judged = paced_out[("spin", latency.RUNNING)].wall
    rows = [
        ("Client.record(), server elsewhere, spin", len(judged), judged, rem_running),
        (
            "Client.record(), server elsewhere, sleep",
            len(judged),
            paced_out[("sleep", latency.RUNNING)].wall,
            rem_running,
        ),
        ("Client.record(), stack on these 2 cores", mem.recorded, client_lat, mem),
        ("Client.record() (durable SQLite buffer)", dur.recorded, durable_lat, dur),
        ("Client.record() unpaced (stub)", len(tight_lat), tight_lat, rem),
        (f"baseline: httpx.post per event ({base_rate:,.0f}/s max)", n_base, base_lat, None),
    ]
    for name, n, lat, stats in rows:
        goal = ""
        if name.endswith(", spin"):
            met = pct(lat, 0.99) <= GOAL_P99_US
            ok &= met
            goal = f"p99 <= {GOAL_P99_US:g} us: {'met' if met else 'NOT met'}"
        per_k = 1000.0 if stats is None else stats.requests * 1000 / stats.recorded
        print(
            f"{name:46} {n:>7} {pct(lat, 0.5):>8.1f} {pct(lat, 0.99):>8.1f} "
            f"{pct(lat, 0.999):>9.1f} {mean(lat):>8.1f} {per_k:>10.1f}  {goal}"
        )
    print(
        "(the goal is judged with spin pacing: the core stays awake between calls, so the "
        "figure is record()'s; sleep pacing adds the machine's wake-up, see the floors below)"
    )
    print()
    print("\n".join(latency.report(paced_out, tight)))
    for pacing in ("sleep", "spin"):
        rec = paced_out[(pacing, latency.RUNNING)].wall
        dumps = paced_out[(pacing, latency.DUMPS)].wall
        print(
            f"record() / json.dumps, {pacing} pacing: p50 {pct(rec, 0.5) / pct(dumps, 0.5):.2f}x, "
            f"p99 {pct(rec, 0.99) / pct(dumps, 0.99):.2f}x"
        )
    print(
        f"record() unpaced, two ways: mean of {len(tight_lat)} timed calls "
        f"{mean(tight_lat):.2f} us, {n_client} calls in one timed loop {tight_mean:.2f} us/call"
    )
    fewer = (n_base / n_base) / (mem.requests / mem.recorded)
    met = fewer >= GOAL_FEWER
    ok &= met
    print(
        f"HTTP requests per event: client {mem.requests}/{mem.recorded}, baseline 1/1: "
        f"{fewer:.0f}x fewer (goal >= {GOAL_FEWER:g}x: {'met' if met else 'NOT met'})"
    )
    print(
        f"p99 vs baseline: {pct(base_lat, 0.99) / pct(client_lat, 0.99):.0f}x lower; "
        f"delivery to the stack: sent {mem.sent + dur.sent}, dropped "
        f"{mem.dropped + dur.dropped}, rejected {mem.rejected + dur.rejected}"
    )
    print()
    print("DynamoDB units the server spends per event (billing rules applied to each call)")
    print(
        f"{'case':34} {'events':>7} {'phase':>7} {'req':>6} {'RCU':>9} {'WCU':>7} {'units/ev':>9}"
    )
    per_event: dict[str, float] = {}
    for name, n, phases in (
        (
            "client-batched (Client)",
            mem.sent,
            (("ingest", ingest_batched), ("flush", flush_batched)),
        ),
        (
            "one-event requests (baseline)",
            n_base,
            (("ingest", ingest_single), ("flush", flush_single)),
        ),
    ):
        total = 0.0
        for phase, u in phases:
            req = sum(u["requests"].values())
            cost = u["rcu"] + u["wcu"]
            total += cost
            print(
                f"{name:34} {n:>7} {phase:>7} {req:>6} {u['rcu']:>9.1f} {u['wcu']:>7} "
                f"{cost / n:>9.3f}"
            )
        per_event[name] = total / n
        print(f"{name:34} {n:>7} {'total':>7} {'':>6} {'':>9} {'':>7} {total / n:>9.3f}")
    ingest_ratio = ((ingest_batched["rcu"] + ingest_batched["wcu"]) / mem.sent) / (
        (ingest_single["rcu"] + ingest_single["wcu"]) / n_base
    )
    ratio = per_event["client-batched (Client)"] / per_event["one-event requests (baseline)"]
    met = ratio <= GOAL_UNITS
    ok &= met
    print(f"units per event, batched / one-event, ingest alone: {ingest_ratio:.2f}x")
    print(
        f"units per event, batched / one-event, ingest + flush: {ratio:.2f}x "
        f"(goal <= {GOAL_UNITS:g}x: {'met' if met else 'NOT met'})"
    )
    for label, u in (("batched ingest", ingest_batched), ("one-event ingest", ingest_single)):
        ops = ", ".join(f"{k} {v}" for k, v in sorted(u["requests"].items()))
        print(f"  {label}: {ops}")
    print()
    print("all goals met" if ok else "SOME GOALS NOT MET")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
