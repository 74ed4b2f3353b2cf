"""One tenant floods the usage API at 10x its plan's rate; another tenant's latency, with and
without the flood, in the same run (bounded, loopback).

- The usage API (``meterbridge.api.usage``) on its own uvicorn process, against a moto server
  (NATS off): the same app the Lambda serves, one worker.
- Tenant B (Pro) sends a steady ``--b-rate`` requests/s, alternately ``POST /v1/events`` (one
  event) and ``GET /v1/usage``, open loop; its latency is what is measured.
- Tenant A, on each plan of ``--plans`` in turn (Free: 100 requests/min, Basic: 1,000), sends
  10x its plan's rate (Free 16.7/s, Basic 166.7/s) from its own process (open loop, at most
  ``--in-flight`` requests outstanding), the same mix of routes.
- Phases of ``--seconds`` each, per plan and round: ``unloaded`` (B alone), ``flood`` (B while
  A floods), and the baseline ``unthrottled`` (B while A' floods the same way on a copy of the
  plan whose rate is 10,000,000/min: what the flood costs B when nothing refuses it).

Rounds are short and interleaved (each round starts with another phase), and each phase's
samples are pooled over the rounds, so load from other processes that comes and goes, and the
tables growing in moto, hit every phase alike. Both clients are raw HTTP/1.1 on asyncio
(``load.py``), and the CPU each process spent in each phase is printed: the flood must load
the server, not the machine through its own client. The goal: B's pooled p99
under the flood within 2x of its pooled unloaded p99.

    python -m bench.flood [--plans free,basic] [--seconds 6] [--rounds 3] [--b-rate 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from bench.flood.load import cpu_seconds, flood_worker, open_loop
from bench.tables import BENCH_ENV, fresh_tables

ROOT = Path(__file__).resolve().parents[2]
GOAL_RATIO = 2.0
FLOOD_FACTOR = 10


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def phase(
    url: str,
    b_key: str,
    b_rate: float,
    seconds: float,
    in_flight: int,
    flood: str | None,
    flood_rate: float,
    pids: dict[str, int],
) -> dict[str, Any]:
    """B's latencies for one phase, with A (or A') flooding from another process if given;
    the CPU seconds each process spent in it."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    worker = None
    if flood is not None:
        worker = ctx.Process(
            target=flood_worker,
            args=(url, flood, flood_rate, seconds, in_flight, queue),
            daemon=True,
        )
        worker.start()
        time.sleep(0.5)  # the worker's interpreter start, not measured
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    b_before = cpu_seconds()
    latencies, b_outcomes = asyncio.run(
        open_loop(url, b_key, b_rate, seconds, 64, uuid.uuid4().hex)
    )
    cpu = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    cpu["B client"] = cpu_seconds() - b_before
    a_outcomes: dict[str, int] = {}
    if worker is not None:
        report = queue.get(timeout=seconds + 120)
        a_outcomes = report["outcomes"]
        cpu["A client"] = report["cpu_s"]  # its whole life: start-up, then the flood
        worker.join(timeout=30)
    return {
        "b": latencies,
        "b_outcomes": dict(b_outcomes),
        "a_outcomes": a_outcomes,
        "cpu": cpu,
        "seconds": seconds,
    }


def _server(env: dict[str, str]) -> Any:
    from meterbridge_dev.stack.processes import ManagedProcess

    class UsageApi(ManagedProcess):
        name = "usage API"

        def command(self) -> list[str]:
            return [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "meterbridge.api.usage:create_app",
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "--no-access-log",
            ]

    return UsageApi(env=env, cwd=str(ROOT))


def _tenant(plan: str) -> str:
    """A tenant on ``plan`` with one key (the tests' factory); its raw key."""
    from tests.support.builders import make_tenant

    return make_tenant(plan=plan)[1]


ENV = BENCH_ENV


def tables(moto_url: str) -> None:
    """Fresh tables in the moto server at ``moto_url``, named in this process's environment."""
    fresh_tables(moto_url)


def _fmt(outcomes: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())) or "-"


def main() -> int:
    parser = argparse.ArgumentParser(description="Flood of one tenant vs another's latency")
    parser.add_argument("--plans", default="free,basic")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--b-rate", type=float, default=20.0)
    parser.add_argument("--in-flight", type=int, default=256)
    args = parser.parse_args()
    plan_ids = [p for p in args.plans.split(",") if p]

    os.environ.update(ENV)
    from meterbridge.plans import PLANS_FILE_DEFAULT
    from meterbridge_dev.stack.processes import MotoServer

    plans = json.loads(PLANS_FILE_DEFAULT.read_text())
    rpm = {p: plans["plans"][p]["requests_per_minute"] for p in plan_ids}
    for p in plan_ids:
        # The baseline's plan: the same plan with a rate nothing reaches.
        plans["plans"][f"{p}_unthrottled"] = dict(plans["plans"][p], requests_per_minute=10**7)
    plans_file = Path(tempfile.mkdtemp()) / "plans.json"
    plans_file.write_text(json.dumps(plans))
    os.environ["METERBRIDGE_PLANS_FILE"] = str(plans_file)

    rows: list[tuple[str, int, str, dict[str, Any]]] = []
    with MotoServer() as moto:
        tables(moto.url)
        b_key = _tenant("pro")
        with _server(dict(os.environ)) as api:
            url = f"http://{api.host}:{api.port}"
            pids = {"server": api.proc.pid, "moto": moto.proc.pid}
            # Warm-up: imports, the key cache, the tables' first requests.
            asyncio.run(open_loop(url, b_key, 20, 2, 8, "warm"))
            for plan in plan_ids:
                flood_rate = FLOOD_FACTOR * rpm[plan] / 60
                for r in range(1, args.rounds + 1):
                    # Fresh flooding tenants each round: a full bucket, an unused window.
                    flooders = {
                        "unloaded": None,
                        "flood": _tenant(plan),
                        "unthrottled": _tenant(f"{plan}_unthrottled"),
                    }
                    # Each round starts with another phase, so what grows during a run (the
                    # tables in moto) does not always fall on the same phase.
                    names = list(flooders)
                    order = names[(r - 1) % 3 :] + names[: (r - 1) % 3]
                    for name in order:
                        flooder = flooders[name]
                        result = phase(
                            url,
                            b_key,
                            args.b_rate,
                            args.seconds,
                            args.in_flight,
                            flooder,
                            flood_rate,
                            pids,
                        )
                        rows.append((plan, r, name, result))

    print(
        f"flood: tenant A sends {FLOOD_FACTOR}x its plan's rate for {args.seconds:.0f} s (at most "
        f"{args.in_flight} outstanding); tenant B (Pro) sends {args.b_rate:.0f} requests/s; both "
        "alternate POST /v1/events (1 event) and GET /v1/usage. Latency of B's requests:"
    )
    for plan in plan_ids:
        print(
            f"A on {plan} ({rpm[plan]} requests/min = {rpm[plan] / 60:.1f}/s; "
            f"flood {FLOOD_FACTOR * rpm[plan] / 60:.1f}/s), {args.rounds} rounds interleaved, "
            "samples pooled:"
        )
        pooled: dict[str, list[float]] = {"unloaded": [], "flood": [], "unthrottled": []}
        answers: dict[str, Counter[str]] = {n: Counter() for n in pooled}
        cpu: dict[str, dict[str, float]] = {n: {} for n in pooled}
        wall: dict[str, float] = dict.fromkeys(pooled, 0.0)
        a_answers: dict[str, Counter[str]] = {n: Counter() for n in pooled}
        per_round: dict[str, list[float]] = {"flood": [], "unthrottled": []}
        for r in range(1, args.rounds + 1):
            mine = dict((n, res) for p, rr, n, res in rows if p == plan and rr == r)
            base = pct(mine["unloaded"]["b"], 0.99)
            for name, res in mine.items():
                pooled[name] += res["b"]
                answers[name].update(res["b_outcomes"])
                a_answers[name].update(res["a_outcomes"])
                for proc, used in res["cpu"].items():
                    cpu[name][proc] = cpu[name].get(proc, 0.0) + used
                wall[name] += res["seconds"]
                if name in per_round and base:
                    per_round[name].append(pct(res["b"], 0.99) / base)
        base_p99 = pct(pooled["unloaded"], 0.99)
        for name, b in pooled.items():
            p50, p99 = pct(b, 0.5), pct(b, 0.99)
            line = (
                f"  {name:<11} B: n {len(b):>4}  p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  "
                f"p99 {p99 / base_p99:5.2f}x unloaded  B answers: {_fmt(dict(answers[name]))}"
            )
            print(line)
            if a_answers[name]:
                print(f"  {'':<13} A answers: {_fmt(dict(a_answers[name]))}")
            shares = ", ".join(
                f"{proc} {100 * used / wall[name]:.0f}%" for proc, used in cpu[name].items()
            )
            print(f"  {'':<13} CPU (% of one core over the phase): {shares}")
        flood = pct(pooled["flood"], 0.99) / base_p99
        unthrottled = pct(pooled["unthrottled"], 0.99) / base_p99
        rounds = " ".join(f"{x:.2f}" for x in per_round["flood"])
        print(
            f"  B's p99 under A's flood: {flood:.2f}x unloaded (goal <= {GOAL_RATIO:.0f}x: "
            f"{'met' if flood <= GOAL_RATIO else 'NOT met'}; per round {rounds}); "
            f"the same flood unthrottled: {unthrottled:.2f}x"
        )
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
