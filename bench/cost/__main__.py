"""DynamoDB units per accepted event, by phase, metered on the real code (issue 16).

    python -m bench.cost [--events 1000] [--backlog 100000]

Deterministic: the figures are DynamoDB's billing arithmetic (``bench/cost/sizes.py``) applied
to every request the product's clients send (``bench/cost/meter.py``), not timings. For each
request batch size (1, 10, 100, 1,000 events) with NATS off and on, ``--events`` events go
through ``ingest.ingest`` (validation, dedupe, counters), ``ingest.publish.publish`` (NATS on: a
publisher that acknowledges everything, the happy path), and one ``flush_outbox`` run that
delivers them to a loopback OpenMeter stand-in; units are per event over that whole life.
The flush's per-run units (leases, checkpoints, ledger, gauges) are spread over the events of
the run. TTL expiry deletes cost no units (DynamoDB does not charge them), and an expiring
record sits in no index. Then one run over a backlog of ``--backlog`` events gives the table
reads a run costs whatever the backlog.

Prices: DynamoDB on-demand, Standard table class, us-east-1, as listed from 2024-11-01:
$0.625 per million write request units, $0.125 per million read request units, $0.02 per
100,000 DynamoDB Streams read request units (GetRecords calls).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "om_bench_key"
WRU_USD, RRU_USD, STREAM_USD = 0.625e-6, 0.125e-6, 0.2e-6
GOALS = {(1000, False): 2.2, (1000, True): 2.2, (1, True): 5.0}
RUN_RRU_GOAL = 50
PHASES = ("ingest", "nats feed", "claim", "delivery", "mark", "backlog", "run")


class AckAll:
    """A NATS publisher on its happy path: JetStream acknowledges every message."""

    enabled = True

    async def publish(self, messages: list[Any]) -> set[str]:
        return {m.msg_id for m in messages}

    def publish_sync(self, messages: list[Any]) -> set[str]:
        return {m.msg_id for m in messages}


class Off:
    enabled = False


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cost")
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument(
        "--small-batch-events",
        type=int,
        default=200,
        help="events for batches of 1 and 10 (per-event units do not depend on it, bar the run's)",
    )
    parser.add_argument("--backlog", type=int, default=100_000)
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
    # Settings require every table name; each case creates and names its own tables, so
    # these only let the first client be built (they name no table that exists).
    for var in ("TENANTS_TABLE", "EVENTS_TABLE", "USAGE_TABLE", "IDEMPOTENCY_TABLE"):
        os.environ.setdefault(var, f"bench-unset-{var.lower()}")
    from bench.flush.__main__ import start_sink
    from meterbridge_dev.stack.processes import MotoServer

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


def _fresh_tables() -> dict[str, str]:
    from meterbridge.dal import dynamo
    from meterbridge.settings import get_settings
    from meterbridge_dev.stack.tables import create_tables

    tag = uuid.uuid4().hex[:6]
    names = {
        "EventsTable": f"cost-events-{tag}",
        "IdempotencyTable": f"cost-idem-{tag}",
        "UsageTable": f"cost-usage-{tag}",
        "TenantsTable": f"cost-tenants-{tag}",
    }
    create_tables(dynamo.client(), names)
    os.environ.update(
        EVENTS_TABLE=names["EventsTable"],
        IDEMPOTENCY_TABLE=names["IdempotencyTable"],
        USAGE_TABLE=names["UsageTable"],
        TENANTS_TABLE=names["TenantsTable"],
    )
    get_settings.cache_clear()
    return names


def _meter(names: dict[str, str]) -> Any:
    import boto3

    from bench.cost.meter import Meter, indexes_from_template
    from meterbridge.dal import dynamo

    dynamo.reset_clients()
    meter = Meter(indexes_from_template(names), boto3.client("dynamodb"))
    meter.install(dynamo.client(), dynamo.streams_client())
    return meter


def _client(url: str) -> Any:
    from meterbridge.adapters.openmeter import OpenMeterClient, RetryPolicy
    from meterbridge.resilience import CircuitBreaker

    return OpenMeterClient(
        url,
        API_KEY,
        timeout_s=30.0,
        retry=RetryPolicy(max_attempts=4, backoff_base_s=0.01, backoff_cap_s=0.1),
        breaker=CircuitBreaker("cost", failure_threshold=8, reset_timeout_s=0.2),
    )


def life(batch: int, nats: bool, events: int, sink_url: str) -> dict[str, float]:
    """Units per event over ingest, publish and one flush run, by phase."""
    from meterbridge.logic import flush, ingest
    from meterbridge.logic.ingest import publish as ingest_publish
    from meterbridge.settings import get_settings

    names = _fresh_tables()
    os.environ["NATS_ENABLED"] = "true" if nats else "false"
    get_settings.cache_clear()
    settings = get_settings()
    meter = _meter(names)
    ingest_publish.get_publisher = lambda: AckAll()  # type: ignore[assignment]
    tenant = f"t_{uuid.uuid4().hex[:16]}"
    bodies = [
        [
            {"id": f"e-{i:06d}", "type": "api.call", "data": {"n": 1}}
            for i in range(s, min(s + batch, events))
        ]
        for s in range(0, events, batch)
    ]
    for body in bodies:
        meter.phase = "ingest"
        _, stored, alerts = ingest.ingest(tenant, "pro", body, settings=settings)
        meter.phase = "nats feed"
        asyncio.run(ingest_publish.publish(tenant, stored, alerts, settings=settings))
    meter.phase = "flush"
    result = flush.flush_outbox(
        None,
        settings=settings,
        client=_client(sink_url),
        publisher=AckAll() if nats else Off(),
    )
    assert result.sent == events and result.remaining == 0, result
    return {f"{p}:{k}": v / events for (p, k), v in meter.units.items()}


def backlog_run(backlog: int, sink_url: str) -> dict[str, float]:
    """Table reads (and writes) of one flush run over a backlog of ``backlog`` events."""
    from tests.support.flush import fill_outbox

    from meterbridge.logic import flush
    from meterbridge.models.cloudevent import CloudEvent, usage_source
    from meterbridge.settings import get_settings

    names = _fresh_tables()
    os.environ["NATS_ENABLED"] = "false"
    get_settings.cache_clear()
    tenant = "t_backlog"
    for start in range(0, backlog, 10_000):
        chunk = [
            CloudEvent(
                id=f"b-{i:07d}",
                source=usage_source(tenant),
                type="api.call",
                subject=tenant,
                time="2026-12-01T00:00:00.000Z",
                data={"n": 1},
            )
            for i in range(start, min(backlog, start + 10_000))
        ]
        fill_outbox(names["EventsTable"], chunk, tenant=tenant)
    meter = _meter(names)
    meter.phase = "flush"
    result = flush.flush_outbox(
        None, settings=get_settings(), client=_client(sink_url), publisher=Off()
    )
    totals: dict[str, float] = {"sent": float(result.sent), "remaining": float(result.remaining)}
    for (_phase, kind), v in meter.units.items():
        totals[kind] = totals.get(kind, 0.0) + v
    return totals


def run(args: argparse.Namespace, sink_url: str) -> None:
    import contextlib

    rows = []
    # Powertools prints EMF metrics to stdout as they pile up: keep them out of the table.
    with contextlib.redirect_stdout(sys.stderr):
        for nats in (False, True):
            for batch in (1, 10, 100, 1000):
                n = args.events if batch >= 100 else args.small_batch_events
                rows.append((batch, nats, n, life(batch, nats, n, sink_url)))
        b = backlog_run(args.backlog, sink_url)
    print(
        f"Per accepted event over its life ({args.events} events a case, {args.small_batch_events}"
        " for batches of 1 and 10; one flush run a case), "
        "DynamoDB's billing rules on every request the code made (bench/cost). Floor: one "
        "conditional write of a record of at most 1 KB = 1 WRU."
    )
    print()
    print(
        "| batch | NATS | " + " | ".join(PHASES) + " | WRU total | RRU total | stream reads "
        "| $ per million events | goal |"
    )
    print("|---|---|" + "---|" * len(PHASES) + "---|---|---|---|---|")
    for batch, nats, _n, u in rows:
        cells = []
        for p in PHASES:
            w, r = u.get(f"{p}:wru", 0.0), u.get(f"{p}:rru", 0.0)
            cells.append(f"{w:.3f} / {r:.3f}" if (w or r) else "-")
        wru = sum(v for k, v in u.items() if k.endswith(":wru"))
        rru = sum(v for k, v in u.items() if k.endswith(":rru"))
        streams = sum(v for k, v in u.items() if k.endswith(":stream_reads"))
        usd = (wru * WRU_USD + rru * RRU_USD + streams * STREAM_USD) * 1e6
        goal = GOALS.get((batch, nats))
        verdict = "-" if goal is None else f"<= {goal} WRU: {'met' if wru <= goal else 'MISSED'}"
        print(
            f"| {batch} | {'on' if nats else 'off'} | "
            + " | ".join(cells)
            + f" | {wru:.3f} | {rru:.3f} | {streams:.4f} | {usd:.3f} | {verdict} |"
        )
    print()
    print("Cells are WRU / RRU per event. Floor: 1.000 WRU, $0.625 per million events.")
    print()
    rru = b.get("rru", 0.0)
    print(
        f"One flush run over a backlog of {args.backlog:,} events: {rru:.1f} RRU "
        f"(goal <= {RUN_RRU_GOAL}: {'met' if rru <= RUN_RRU_GOAL else 'MISSED'}), "
        f"{b.get('wru', 0.0):.0f} WRU, {b.get('stream_reads', 0.0):.0f} GetRecords calls; "
        f"it delivered {b['sent']:,.0f} and left {b['remaining']:,.0f}. No read grows with "
        "the backlog: bodies come from the stream, counts from the ledger."
    )
    print()
    print(
        "Prices: on-demand, Standard table class, us-east-1, listed from 2024-11-01: "
        "$0.625/M WRU, $0.125/M RRU, $0.02 per 100,000 streams read request units."
    )


if __name__ == "__main__":
    main()
