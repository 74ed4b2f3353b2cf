"""Latency from NATS publish to SSE receipt, and deliveries per CPU-second, against a baseline.

    python -m bench.stream [--clients 100,1000] [--seconds 20] [--rounds 2] [--profile DIR]

For each client count, ``--rounds`` interleaved pairs (ours, then the sse-starlette baseline):
a fresh relay process pinned to one CPU, N SSE clients (10 per tenant), every tenant
published at 10 events/s so each client receives 10 events/s. Each event carries its publish
time; clients record receipt - publish. The relay's CPU time (utime + stime from /proc) over
the measured window gives deliveries per CPU-second; the figure is the median of the rounds'
ratios, leaving out rounds where a relay fell behind. The load generator and nats-server run
on the other CPU(s). ``--profile DIR`` writes a CPU sampling report per relay (sampler.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import nats

from meterbridge_dev.stack.processes import NatsServer, free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
CLIENTS_PER_TENANT = 10
RATE_PER_TENANT = 10.0
WARMUP_S = 3.0
SENT = re.compile(rb'"sent":\s*([0-9.]+)')


class Stats:
    def __init__(self) -> None:
        self.measuring = False
        self.latencies: list[float] = []
        self.deliveries = 0
        self.connected = 0


class SSEProtocol(asyncio.Protocol):
    """A minimal SSE client: finds each frame's publish time and records the latency."""

    def __init__(self, stats: Stats, request: bytes) -> None:
        self.stats = stats
        self.request = request
        self.buf = b""

    def connection_made(self, transport: Any) -> None:
        transport.write(self.request)
        self.stats.connected += 1

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buf = self.buf + data
        cut = buf.rfind(b"\n") + 1  # only complete lines (\n or \r\n endings alike)
        lines, self.buf = buf[:cut], buf[cut:]
        if not self.stats.measuring:
            return
        for match in SENT.finditer(lines):
            self.stats.latencies.append(now - float(match.group(1)))
            self.stats.deliveries += 1


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


async def run_one(
    kind: str, clients: int, seconds: float, nats_url: str, cpu: int, profile: str | None = None
) -> dict:
    port = free_port()
    extra = ["--profile", f"{profile}/{kind}-{clients}.txt"] if profile else []
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'shared'}{os.pathsep}{ROOT}"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.stream.server",
            kind,
            "--port",
            str(port),
            "--nats",
            nats_url,
            "--cpu",
            str(cpu),
            *extra,
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=30, proc=proc)
        async with httpx.AsyncClient() as http:
            while (await http.get(f"http://127.0.0.1:{port}/ready")).status_code != 200:
                await asyncio.sleep(0.1)
        stats = Stats()
        tenants = [f"bench{i}" for i in range(max(1, clients // CLIENTS_PER_TENANT))]
        loop = asyncio.get_running_loop()
        transports = []
        for i in range(clients):
            tenant = tenants[i % len(tenants)]
            request = (
                f"GET /stream?tenant={tenant} HTTP/1.1\r\nHost: bench\r\n"
                "Accept: text/event-stream\r\n\r\n"
            ).encode()
            transport, _ = await loop.create_connection(
                lambda r=request: SSEProtocol(stats, r), "127.0.0.1", port
            )
            transports.append(transport)
        nc = await nats.connect(nats_url)
        stop = asyncio.Event()
        # Unique per run: the stream's duplicate window would drop a later run's messages.
        run_id = os.urandom(6).hex()

        async def publish() -> None:
            # Every tenant at 10 events/s, phases spread over the period in 10 ms ticks
            # (independent sources are not synchronised; a burst of every tenant at once
            # would measure queueing behind the burst instead of delivery).
            ticks = 10
            tick_s = 1.0 / RATE_PER_TENANT / ticks
            slices = [tenants[i::ticks] for i in range(ticks)]
            n = 0
            next_at = time.monotonic()
            while not stop.is_set():
                for group in slices:
                    for tenant in group:
                        n += 1
                        payload = (
                            f'{{"id":"b{n}","type":"api.request","source":"bench",'
                            f'"data":{{"sent":{time.time():.6f}}}}}'
                        )
                        await nc.publish(
                            f"meterbridge.tenant.{tenant}.usage",
                            payload.encode(),
                            headers={"Nats-Msg-Id": f"{run_id}-{n}"},
                        )
                    next_at += tick_s
                    await asyncio.sleep(max(0.0, next_at - time.monotonic()))

        publisher = asyncio.create_task(publish())
        await asyncio.sleep(WARMUP_S)
        stats.measuring = True
        if profile:
            proc.send_signal(signal.SIGUSR1)  # the sampler covers the measured window only
        (user0, sys0), t0 = cpu_times(proc.pid), time.monotonic()
        await asyncio.sleep(seconds)
        (user1, sys1), t1 = cpu_times(proc.pid), time.monotonic()
        stats.measuring = False
        stop.set()
        await publisher
        await nc.close()
        for transport in transports:
            transport.close()
        lat = sorted(stats.latencies)
        cpu = max(user1 - user0 + sys1 - sys0, 1e-6)
        expected = clients * RATE_PER_TENANT * (t1 - t0)
        return {
            "relay": kind,
            "clients": clients,
            "p50_ms": 1000 * lat[len(lat) // 2] if lat else float("nan"),
            "p99_ms": 1000 * lat[int(len(lat) * 0.99)] if lat else float("nan"),
            "deliveries": stats.deliveries,
            "delivered_pct": 100 * stats.deliveries / expected,
            "cpu_util": cpu / (t1 - t0),
            "sys_share": (sys1 - sys0) / cpu,
            "per_cpu_s": stats.deliveries / cpu,
            "mean_ms": 1000 * statistics.fmean(lat) if lat else float("nan"),
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", default="100,1000")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window per case")
    parser.add_argument("--rounds", type=int, default=2, help="ours/baseline pairs per count")
    parser.add_argument("--kinds", default="ours,baseline")
    parser.add_argument("--profile", default=None, help="a directory for CPU sampling reports")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    relay_cpu = cpus[-1]
    if len(cpus) > 1:
        os.sched_setaffinity(0, set(cpus[:-1]))  # load generator off the relay's CPU
    print(f"load average before: {_loadavg()}", flush=True)
    server = NatsServer().start()
    try:
        nc = await nats.connect(server.url)
        from meterbridge.bus.publisher import ensure_stream

        await ensure_stream(nc.jetstream(), "METERBRIDGE")
        await nc.close()
        rows = []
        for clients in [int(c) for c in args.clients.split(",")]:
            for round_ in range(args.rounds):
                # Interleaved (ours, baseline, ours, ...): a change in the machine's load
                # lands on both relays alike instead of on one of them.
                for kind in args.kinds.split(","):
                    row = await run_one(
                        kind, clients, args.seconds, server.url, relay_cpu, args.profile
                    )
                    row["round"] = round_
                    rows.append(row)
                    print(_line(row), flush=True)
        print(f"load average after: {_loadavg()}")
        print("\nratios (ours / baseline, deliveries per CPU-second):")
        for clients in sorted({r["clients"] for r in rows}):
            pairs = [
                (o, b)
                for o in rows
                for b in rows
                if o["clients"] == b["clients"] == clients
                and o["round"] == b["round"]
                and (o["relay"], b["relay"]) == ("ours", "baseline")
            ]
            if not pairs:
                continue
            # A relay that fell behind (CPU taken by other processes) measures a backlog,
            # not steady delivery: such rounds are shown but left out of the figure.
            steady = [(o, b) for o, b in pairs if _steady(o) and _steady(b)] or pairs
            ratios = [o["per_cpu_s"] / b["per_cpu_s"] for o, b in steady]
            p99 = statistics.median(o["p99_ms"] for o, _ in steady)
            base_p99 = statistics.median(b["p99_ms"] for _, b in steady)
            note = ""
            if steady is pairs and not all(_steady(o) and _steady(b) for o, b in pairs):
                note = "  (no steady round: the machine was overloaded; rerun)"
            elif len(steady) < len(pairs):
                note = f"  ({len(pairs) - len(steady)} unsteady round(s) left out)"
            print(
                f"  {clients:>5} clients: {statistics.median(ratios):.2f}x"
                f" (rounds: {' '.join(f'{r:.2f}x' for r in ratios)})"
                f"  p99 {p99:.1f} ms vs {base_p99:.1f} ms{note}"
            )
    finally:
        server.cleanup()


def _steady(row: dict) -> bool:
    """Delivered what was published in the window (within 2%): the relay kept up."""
    return 98.0 <= row["delivered_pct"] <= 102.0


def _line(row: dict) -> str:
    return (
        f"{row['relay']:>8} {row['clients']:>5} clients: p50 {row['p50_ms']:7.1f} ms"
        f"  p99 {row['p99_ms']:7.1f} ms  delivered {row['delivered_pct']:5.1f}%"
        f"  relay CPU {row['cpu_util']:4.2f} (sys {row['sys_share']:.0%})"
        f"  deliveries/CPU-s {row['per_cpu_s']:8.0f}{'' if _steady(row) else '  (behind)'}"
    )


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


if __name__ == "__main__":
    asyncio.run(main())
