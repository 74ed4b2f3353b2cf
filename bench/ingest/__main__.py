"""Ingest throughput and DynamoDB requests against a moto server, with baselines in one run.

Per invocation, in-process, batches of 1, 100 and 1,000 new events (fresh ids every run):

- ``ingest``: ``meterbridge.logic.ingest.ingest(...)`` as the route calls it: validate the
  batch, then one ``TransactWriteItems`` per chunk of <= 100 items (conditional event-record
  puts, the chunk's outbox segment, the chunk's counter ADDs), then the threshold check.
- baseline ``naive``: one conditional ``PutItem`` per event (the same event records).
- baseline ``bare min``: the same conditional puts in ``TransactWriteItems`` of 100, without
  counters: the fewest requests that store each event once (DynamoDB offers a per-item
  condition, the dedupe, only on single writes and in transactions). The ingest goal (<= 1.5x)
  is judged against it.
- baseline ``floor``: ``BatchWriteItem`` of the same items, 25 per request, unconditional: the
  cheapest way to put these bytes in DynamoDB at all, but it overwrites (a retried batch would
  store and count its events again), so it is a floor, not a way to ingest. Shown beside.

Baselines are timed on the writes alone (items built beforehand); ``ingest`` is timed whole
(validation and item building included), so its ratios are conservative.

DynamoDB requests per 1,000 new events are counted with a botocore ``before-call`` hook on the
DAL's client, for the logic, for ``POST /v1/events`` through the ASGI app (auth, rate slot),
and, when a nats-server is installed, for the route with NATS on (the republish markers are
cleared after publishing).

Route overhead, DynamoDB excluded: ``POST /v1/events`` with one event called straight on the
ASGI app (no HTTP client, no socket) with the DAL's functions replaced by no-ops in this
process only, beside an empty FastAPI route as the floor.

    python -m bench.ingest [--runs 3] [--route-n 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bench.tables import BENCH_ENV, fresh_tables

GOAL_REQUESTS = 30
GOAL_RATIO = 1.5
GOAL_ROUTE_US = 300.0
GOAL_SUM_RATIO = 1.2  # the SUM-by-model case against the count case (issue 14)
SUM_CASE = "ingest SUM by model (4 models)"
SIZES = (1, 100, 1000)
PLAN = "pro"  # soft limits: counters and threshold checks on every meter, no quota refusals


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class RequestCounter:
    """Counts DynamoDB API calls by operation (botocore ``before-call``: once per call)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def __call__(self, model: Any = None, **_: Any) -> None:
        self.calls[model.name if model is not None else "?"] += 1

    @contextlib.contextmanager
    def window(self) -> Any:
        self.calls.clear()
        yield self.calls


def raw_events(tag: str, n: int) -> list[dict[str, Any]]:
    return [
        {"id": f"{tag}-{i}", "type": "api.call", "data": {"endpoint": "/search", "ms": 12}}
        for i in range(n)
    ]


MODELS = ("gpt-small", "gpt-large", "claude-mini", "llama-70b")


def sum_events(tag: str, n: int) -> list[dict[str, Any]]:
    """Events of the bench's ``bench_tokens`` meter: SUM of ``$.tokens`` by ``$.model``."""
    return [
        {
            "id": f"{tag}-{i}",
            "type": "bench.tokens",
            "data": {"tokens": 100 + i % 900, "model": MODELS[i % len(MODELS)]},
        }
        for i in range(n)
    ]


def bench_catalogue(directory: str) -> str:
    """The sample catalogue plus one SUM-by-model meter (no limit on it: the cost of the
    cells, not of a quota)."""
    from meterbridge.plans import PLANS_FILE_DEFAULT

    raw = json.loads(PLANS_FILE_DEFAULT.read_text())
    raw["meters"]["bench_tokens"] = {
        "description": "bench: tokens by model",
        "unit": "token",
        "types": ["bench.tokens"],
        "aggregation": "SUM",
        "value_property": "$.tokens",
        "group_by": {"model": "$.model"},
    }
    # The route case sends thousands of requests a second from one tenant: its plan's rate
    # limit (an in-process bucket before any I/O, so its cost stays measured) must not refuse.
    raw["plans"][PLAN]["requests_per_minute"] = 100_000_000
    path = os.path.join(directory, "bench-plans.json")
    with open(path, "w") as fh:
        json.dump(raw, fh)
    return path


def asgi_call(
    app: Any, method: str, path: str, body: bytes, headers: dict[str, str], lambda_scope: bool
) -> Any:
    """One request straight into the ASGI app; returns a coroutine giving (status, body).

    ``lambda_scope`` adds what Mangum adds (the Lambda event), so the route takes its Lambda
    path (blocking calls inline: one request per invocation).
    """
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        + [(b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    if lambda_scope:
        scope["aws.event"] = {"requestContext": {"http": {"method": method, "path": path}}}

    async def run() -> tuple[int, bytes]:
        delivered = False
        status = 0
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await app(scope, receive, send)
        return status, b"".join(chunks)

    return run()


def main() -> int:
    parser = argparse.ArgumentParser(description="Ingest throughput and DynamoDB requests")
    parser.add_argument("--runs", type=int, default=3, help="runs per case at 1,000 events")
    parser.add_argument("--route-n", type=int, default=2000, help="requests per route case")
    args = parser.parse_args()

    os.environ.update(
        {
            **BENCH_ENV,
            "METERBRIDGE_KEY_PEPPER": "bench-pepper",
            "METERBRIDGE_KEY_CACHE_TTL_S": "60",
        }
    )
    import tempfile

    workdir = tempfile.mkdtemp(prefix="bench-ingest-")
    os.environ["METERBRIDGE_PLANS_FILE"] = bench_catalogue(workdir)
    from meterbridge_dev.stack.processes import MotoServer, NatsServer, nats_server_binary

    server = MotoServer().start()
    # Powertools flushes its metrics buffer (EMF) to stdout outside a Lambda: keep it quiet.
    quiet = contextlib.redirect_stdout(io.StringIO())
    try:
        fresh_tables(server.url)
        from meterbridge.bus.publisher import reset_publisher
        from meterbridge.dal import dynamo, outbox
        from meterbridge.dal import keys as keys_dal
        from meterbridge.dal import tenants as tenants_dal
        from meterbridge.logic import ingest
        from meterbridge.logic.ingest import parse
        from meterbridge.logic.keys import format as keys
        from meterbridge.settings import get_settings

        settings = get_settings()
        counter = RequestCounter()
        dynamo.client().meta.events.register("before-call.dynamodb", counter)

        # A tenant made through the product's DAL (as tests/support/builders.py does).
        tenant_id = "t_" + uuid.uuid4().hex[:16]
        created = datetime.now(UTC).isoformat()
        tenants_dal.put_tenant(
            settings.tenants_table,
            {
                "tenant_id": tenant_id,
                "name": "Bench",
                "email": "bench@example.com",
                "plan": PLAN,
                "status": "active",
                "created_at": created,
            },
        )
        raw_key, lookup = keys.generate("test")
        keys_dal.put_key(
            settings.tenants_table,
            {
                "lookup_id": lookup,
                "tenant_id": tenant_id,
                "prefix": raw_key[:12],
                "key_hash": keys.hash_key(raw_key, settings.key_pepper),
                "status": "active",
                "created_at": created,
            },
        )
        auth = {"authorization": f"Bearer {raw_key}", "content-type": "application/json"}
        client = dynamo.client()
        seq = iter(range(10**9))

        def items_for(tag: str, n: int) -> list[dict[str, Any]]:
            now = datetime.now(UTC)
            batch = parse.validate(tenant_id, raw_events(tag, n), now=now)
            at = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            return [
                outbox.outbox_item(e, tenant_id=tenant_id, kind="usage", accepted_at=at)
                for e in batch.events
            ]

        def ingest_of(
            make: Callable[[str, int], list[dict[str, Any]]], tag: str
        ) -> Callable[[int], Callable[[], None]]:
            def build(n: int) -> Callable[[], None]:
                body = make(f"{tag}{next(seq)}", n)

                def go() -> None:
                    result, _, _ = ingest.ingest(tenant_id, PLAN, body, settings=settings)
                    assert result.accepted == n, result

                return go

            return build

        run_ingest = ingest_of(raw_events, "i")
        run_sum = ingest_of(sum_events, "s")

        def run_naive(n: int) -> Callable[[], None]:
            items = items_for(f"n{next(seq)}", n)

            def go() -> None:
                for item in items:
                    assert dynamo.put_new(settings.events_table, item)

            return go

        def run_batch(n: int) -> Callable[[], None]:
            items = [dynamo.serialize(i) for i in items_for(f"b{next(seq)}", n)]

            def go() -> None:
                for start in range(0, len(items), 25):
                    request = {
                        settings.events_table: [
                            {"PutRequest": {"Item": i}} for i in items[start : start + 25]
                        ]
                    }
                    while request:
                        resp = client.batch_write_item(RequestItems=request)
                        request = resp.get("UnprocessedItems") or {}

            return go

        def run_transact(n: int) -> Callable[[], None]:
            items = [dynamo.serialize(i) for i in items_for(f"x{next(seq)}", n)]

            def go() -> None:
                for start in range(0, len(items), 100):
                    client.transact_write_items(
                        TransactItems=[
                            {
                                "Put": {
                                    "TableName": settings.events_table,
                                    "Item": i,
                                    "ConditionExpression": "attribute_not_exists(pk)",
                                }
                            }
                            for i in items[start : start + 100]
                        ]
                    )

            return go

        cases: dict[str, Callable[[int], Callable[[], None]]] = {
            "ingest": run_ingest,
            SUM_CASE: run_sum,
            "naive: cond. PutItem per event": run_naive,
            "bare min: cond. TransactWrite x100": run_transact,
            "floor: BatchWriteItem x25, no cond.": run_batch,
        }
        quiet.__enter__()

        # -- DynamoDB requests per 1,000 new events ------------------------------------------
        requests: dict[str, Counter[str]] = {}
        for name, build in cases.items():
            go = build(1000)
            with counter.window() as calls:
                go()
            requests[name] = Counter(calls)

        from meterbridge.api.usage import create_app

        app = create_app()

        def route_1000(tag: str) -> Counter[str]:
            body = json.dumps(raw_events(tag, 1000)).encode()
            with counter.window() as calls:
                status, answer = asyncio.run(asgi_call(app, "POST", "/v1/events", body, auth, True))
            assert status == 202, answer
            return Counter(calls)

        route_1000("warm-auth")  # the key lookup is cached after the first request
        requests["POST /v1/events (NATS off)"] = route_1000("route-off")
        nats_note = ""
        if nats_server_binary():
            nats = NatsServer().start()
            try:
                os.environ.update({"NATS_ENABLED": "true", "NATS_SERVERS": nats.url})
                get_settings.cache_clear()
                reset_publisher()
                requests["POST /v1/events (NATS on)"] = route_1000("route-on")
            finally:
                nats.cleanup()
                os.environ["NATS_ENABLED"] = "false"
                get_settings.cache_clear()
                reset_publisher()
        else:
            nats_note = "(no nats-server installed: the NATS-on row is missing)"

        # -- events/s per invocation -----------------------------------------------------------
        runs = {1: args.runs * 40, 100: args.runs * 4, 1000: args.runs}
        timings: dict[int, dict[str, list[float]]] = {}
        per_call: dict[int, dict[str, int]] = {}
        for build in cases.values():  # warm-up (the 1,000-event counts above warmed the rest)
            build(1)()
        for n in SIZES:
            samples: dict[str, list[float]] = {name: [] for name in cases}
            per_call[n] = {}
            for _ in range(runs[n]):
                # Round-robin: load that comes and goes on a shared machine hits all alike.
                for name, build in cases.items():
                    go = build(n)
                    with counter.window() as calls:
                        t0 = time.perf_counter()
                        go()
                        samples[name].append(time.perf_counter() - t0)
                    per_call[n][name] = sum(calls.values())
            timings[n] = samples

        # -- route overhead, DynamoDB excluded -------------------------------------------------
        from fastapi import FastAPI

        from meterbridge.dal import events as events_dal
        from meterbridge.dal import usage as usage_dal
        from meterbridge.dal.outbox import republish as republish_dal
        from meterbridge.models.outbox import Accepted

        key_record = keys_dal.get_key(settings.tenants_table, lookup)
        tenant_record = tenants_dal.get_tenant(settings.tenants_table, tenant_id)
        patches: list[tuple[Any, str, Any]] = [
            (events_dal, "write_chunk", lambda *a, **k: Accepted(written=True)),
            (republish_dal, "mark_pending", lambda *a, **k: 0),
            (usage_dal, "take_rate_slot", lambda *a, **k: True),
            (usage_dal, "used", lambda *a, **k: 0),
            (usage_dal, "total", lambda *a, **k: Decimal(0)),
            (usage_dal, "mark_threshold", lambda *a, **k: False),
            (keys_dal, "get_key", lambda *a, **k: key_record),
            (tenants_dal, "get_tenant", lambda *a, **k: tenant_record),
        ]
        saved = [(mod, attr, getattr(mod, attr)) for mod, attr, _ in patches]
        for mod, attr, fake in patches:
            setattr(mod, attr, fake)

        floor = FastAPI()

        @floor.post("/v1/events", status_code=202)
        async def empty() -> dict[str, int]:
            return {"accepted": 1, "duplicates": 0}

        one = json.dumps(raw_events("route", 1)[0]).encode()
        # name: (app, as Mangum calls it on Lambda). On Lambda the route runs its blocking
        # calls inline; under uvicorn (the local stack) it hops to a worker thread.
        route_cases = {
            "POST /v1/events, 1 event, DAL no-ops": (app, True),
            "same under uvicorn (thread hop)": (app, False),
            "floor: empty FastAPI POST route": (floor, True),
        }

        async def measure_routes() -> dict[str, list[float]]:
            out: dict[str, list[float]] = {name: [] for name in route_cases}
            for i in range(200 + args.route_n):
                for name, (target, on_lambda) in route_cases.items():
                    t0 = time.perf_counter()
                    status, answer = await asgi_call(
                        target, "POST", "/v1/events", one, auth, on_lambda
                    )
                    took = (time.perf_counter() - t0) * 1e6
                    assert status == 202, answer
                    if i >= 200:  # after the warm-up
                        out[name].append(took)
            return out

        with counter.window() as calls:
            route_times = asyncio.run(measure_routes())
            leaked = sum(calls.values())
        for mod, attr, original in saved:
            setattr(mod, attr, original)
        quiet.__exit__(None, None, None)
    finally:
        server.stop()

    # -- report ------------------------------------------------------------------------------
    ok = True
    print(
        f"Ingest per invocation, in-process, moto server over HTTP on loopback; plan {PLAN}; "
        f"median of {runs[1]}/{runs[100]}/{runs[1000]} runs for 1/100/1,000 events"
    )
    bare, floor_name = "bare min: cond. TransactWrite x100", "floor: BatchWriteItem x25, no cond."
    print(
        f"{'events':>6}  {'case':38} {'req':>4} {'ms/inv':>9} {'events/s':>10}"
        f" {'x bare min':>10} {'x floor':>8}  goal"
    )
    for n in SIZES:
        base = statistics.median(timings[n][bare])
        floor_ms = statistics.median(timings[n][floor_name])
        for name, samples in timings[n].items():
            med = statistics.median(samples)
            ratio = med / base
            goal = ""
            if name == "ingest":
                met = ratio <= GOAL_RATIO
                goal = f"<= {GOAL_RATIO}x bare min: {'met' if met else 'NOT met'}"
                ok &= met
            elif name == SUM_CASE:
                vs_count = med / statistics.median(timings[n]["ingest"])
                met = n == 1 or vs_count <= GOAL_SUM_RATIO
                goal = f"{vs_count:.2f}x ingest (count)"
                if n > 1:
                    goal += f", <= {GOAL_SUM_RATIO}x: {'met' if met else 'NOT met'}"
                ok &= met
            print(
                f"{n:>6}  {name:38} {per_call[n][name]:4d} {med * 1000:9.2f} {n / med:10.0f}"
                f" {ratio:10.2f}"
                f" {med / floor_ms:8.2f}  {goal}"
            )
    print()
    print("DynamoDB requests per 1,000 new events (botocore before-call hook)")
    print(f"{'case':38} {'requests':>8}  {'goal':12} by operation")
    for name, calls in requests.items():
        total = sum(calls.values())
        goal = ""
        if name in ("ingest", SUM_CASE) or name.startswith("POST"):
            met = total <= GOAL_REQUESTS
            ok &= met
            goal = f"<= {GOAL_REQUESTS}: {'met' if met else 'NOT'}"
        detail = ", ".join(f"{op} {c}" for op, c in sorted(calls.items()))
        print(f"{name:38} {total:8d}  {goal:12} {detail}")
    if nats_note:
        print(nats_note)
    print()
    print(
        f"Route overhead, DynamoDB excluded: direct ASGI calls, {args.route_n} each "
        f"(DynamoDB calls during the run: {leaked})"
    )
    print(f"{'case':38} {'p50 us':>8} {'p99 us':>8}  goal")
    for name, samples in route_times.items():
        p50, p99 = statistics.median(samples), pct(samples, 0.99)
        goal = ""
        if name.startswith("POST"):
            met = p50 <= GOAL_ROUTE_US and leaked == 0
            ok &= met
            goal = f"p50 <= {GOAL_ROUTE_US:.0f} us: {'met' if met else 'NOT met'}"
        print(f"{name:38} {p50:8.0f} {p99:8.0f}  {goal}")
    route = statistics.median(route_times["POST /v1/events, 1 event, DAL no-ops"])
    empty_floor = statistics.median(route_times["floor: empty FastAPI POST route"])
    print(
        f"route - floor (p50): {route - empty_floor:.0f} us;"
        f" route / floor: {route / empty_floor:.1f}x"
    )
    print("\nall goals met" if ok else "\nsome goals missed")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
