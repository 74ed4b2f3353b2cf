"""Run every benchmark and write docs/performance.md from their output.

    python -m bench [--only NAME ...]

Each benchmark is a package ``bench/<name>/`` runnable as ``python -m bench.<name>``; each
prints its figures beside a baseline measured in the same run, with ratios and goals.
Analysis of each lives in ``docs/performance/<name>.md``; this page holds the latest figures.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["cost", "cold_start", "ingest", "flush", "webhook", "stream", "flood", "client"]
TITLES = {
    "cost": "Cost: DynamoDB units per accepted event, by phase",
    "cold_start": "Cold start: init plus the first request",
    "ingest": "Ingest: events/s and DynamoDB requests",
    "flush": "Flush: delivery to OpenMeter",
    "webhook": "Stripe webhook: handling latency",
    "stream": "Streaming: publish-to-SSE latency and fan-out cost",
    "flood": "Flood: one tenant at 10x its rate, another tenant's latency",
    "client": "Client library: record() latency, requests and DynamoDB units",
}


def benches() -> list[str]:
    found = [p.parent.name for p in (ROOT / "bench").glob("*/__main__.py")]
    return [b for b in ORDER if b in found] + sorted(set(found) - set(ORDER))


def main() -> int:
    parser = argparse.ArgumentParser(description="Run the benchmarks and write the report")
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--output", default=str(ROOT / "docs" / "performance.md"))
    args = parser.parse_args()
    names = [b for b in benches() if not args.only or b in args.only]
    sections: list[str] = []
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] bench.{name} ...", file=sys.stderr, flush=True)
        start = time.monotonic()
        run = subprocess.run(
            [sys.executable, "-m", f"bench.{name}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        took = time.monotonic() - start
        print(f"      done in {took:.0f}s (exit {run.returncode})", file=sys.stderr, flush=True)
        notes = ROOT / "docs" / "performance" / f"{name}.md"
        body = [f"## {TITLES.get(name, name)}", ""]
        if notes.exists():
            body += [
                f"Method, goals and analysis: [performance/{name}.md](performance/{name}.md).",
                "",
            ]
        body += [
            f"`python -m bench.{name}` ({took:.0f} s, exit {run.returncode}):",
            "",
            "```",
            run.stdout.strip() or "(no output)",
            "```",
            "",
        ]
        if run.returncode != 0:
            body += ["stderr (tail):", "", "```", run.stderr.strip()[-2000:], "```", ""]
        sections.append("\n".join(body))
    header = [
        "# Performance",
        "",
        "Every figure is measured beside its baseline in the same run (`make bench`, which",
        "rewrites this page). Machine: "
        f"{platform.machine()}, {platform.system()}, Python {platform.python_version()}, "
        f"{_cores()} cores; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "DynamoDB figures are against a moto server on loopback: moto's per-request cost, not",
        "DynamoDB's, dominates them; request counts and ratios carry over, absolute times do not.",
        "",
    ]
    Path(args.output).write_text("\n".join(header) + "\n" + "\n".join(sections))
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


if __name__ == "__main__":
    raise SystemExit(main())
