"""What a cold invocation pays: init plus the first request, in a fresh process, beside a baseline.

Each sample is a new interpreter that loads one handler module (``functions/<name>/app.py``:
its imports and whatever it builds at import) and then invokes ``lambda_handler`` once with a
sample event from ``events/``, as the Lambda runtime does after a cold start. The first request
is real: it runs against a moto server (DynamoDB and its stream) and a loopback OpenMeter
stand-in started here, so it pays everything the handler deferred to it (boto3, the clients,
credentials, the first connection, the first DynamoDB calls). A second invocation in the same
process is timed too, to show what is warm.

- ``usage_api``: ``apigw-usage-post-events.json`` with a real key of a provisioned tenant and
  fresh event ids (two events accepted: key lookup, quota, the conditional writes).
- ``tenant_admin``: ``apigw-admin-list-tenants.json`` with the IAM context API Gateway adds.
- ``stripe_webhook``: ``functionurl-stripe-webhook.json``, fresh event id, signed now.
- ``openmeter_flush``: ``eventbridge-scheduled.json`` over an empty stream (lease, read,
  release: a run with nothing to send).
- baseline: FastAPI + Mangum + a boto3 client built at import (``baseline_handler.py``),
  invoked with the same ``POST /v1/events`` event (one ``GetItem`` and a conditional
  ``PutItem`` per event, on the same moto server).
- floor: the smallest handler the product's stated stack allows (``floor_handler.py``):
  FastAPI + Mangum + a botocore DynamoDB client built at import, no boto3, no Powertools, no
  settings; the same event and the same calls as the baseline. Its ratio to the baseline is
  the lowest any FastAPI + Mangum + botocore handler can reach (docs/performance/cold_start.md).
  ``floor + runtime measures`` (``floor_measured_handler.py``) is the same handler built with
  the measures of ``meterbridge.runtime`` our handlers take (no GC during init, FastAPI's v1
  probe): the floor for our handlers; what they cost above it is ours.

Interpreter start-up is outside the figure (it is the runtime's, the same for every
function). Rounds interleave the targets (the order rotates each round) so the load of the
shared machine hits all alike; figures are medians, goals are ratios to the baseline.

    python -m bench.cold_start [--rounds 7]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HANDLERS = {
    "usage_api": ROOT / "functions/usage_api/app.py",
    "tenant_admin": ROOT / "functions/tenant_admin/app.py",
    "stripe_webhook": ROOT / "functions/stripe_webhook/app.py",
    "openmeter_flush": ROOT / "functions/openmeter_flush/app.py",
}
SAMPLES = {
    "usage_api": "apigw-usage-post-events.json",
    "tenant_admin": "apigw-admin-list-tenants.json",
    "stripe_webhook": "functionurl-stripe-webhook.json",
    "openmeter_flush": "eventbridge-scheduled.json",
}
BASELINE = "baseline (fastapi+mangum+boto3 client)"
BASELINE_PATH = ROOT / "bench/cold_start/baseline_handler.py"
FLOOR = "floor (fastapi+mangum+botocore client)"
FLOOR_PATH = ROOT / "bench/cold_start/floor_handler.py"
FLOOR_MEASURED = "floor + runtime measures"
FLOOR_MEASURED_PATH = ROOT / "bench/cold_start/floor_measured_handler.py"
FLOORS = (FLOOR, FLOOR_MEASURED)
# Issue 2's goal, judged on the HTTP handlers (the two that share the baseline's shape).
GOAL = 0.70
JUDGED = ("usage_api", "tenant_admin")
NO_FASTAPI = ("stripe_webhook", "openmeter_flush")
WEBHOOK_SECRET = "whsec_bench_cold_start"
OM_KEY = "om_bench_key"
# Packages a handler may defer to its first request (the baseline loads boto3 at init).
DEFERRED_OF_NOTE = {
    "boto3",
    "botocore",
    "aws_xray_sdk",
    "multiprocessing",
    "s3transfer",
    "httpx",
    "stripe",
}

PROBE = r"""
import importlib.util, json, sys, time
path, event_file = sys.argv[1], sys.argv[2]
with open(event_file) as f:
    events = json.load(f)


class Context:
    function_name = "meterbridge-cold-start"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:cold-start"
    memory_limit_in_mb = 512
    log_group_name = "/aws/lambda/cold-start"
    log_stream_name = "cold-start"

    def __init__(self, n):
        self.aws_request_id = f"cold-start-{n}"
        self._deadline = time.monotonic() + 60

    def get_remaining_time_in_millis(self):
        return int((self._deadline - time.monotonic()) * 1000)


t0, c0 = time.perf_counter(), time.process_time()
spec = importlib.util.spec_from_file_location("handler_under_test", path)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
t1, c1 = time.perf_counter(), time.process_time()
at_init = set(sys.modules)
first = mod.lambda_handler(events[0], Context(1))
t2, c2 = time.perf_counter(), time.process_time()
second = mod.lambda_handler(events[1], Context(2))
t3 = time.perf_counter()


def status(result):
    if isinstance(result, dict) and "statusCode" in result:
        return result["statusCode"]
    return 200 if isinstance(result, dict) and result.get("stopped") is None else 500


print(json.dumps({
    "init": (t1 - t0) * 1000, "first": (t2 - t1) * 1000, "second": (t3 - t2) * 1000,
    "cpu": (c2 - c0) * 1000,
    "status": [status(first), status(second)], "result": str(first)[:300],
    "fastapi": "fastapi" in sys.modules,
    "loaded_by_first": sorted(set(sys.modules) - at_init)[:2000],
}))
"""


class Stack:
    """The moto server, the OpenMeter stand-in, the tables and the sample events."""

    def __init__(self) -> None:
        from bench.flush.__main__ import start_sink
        from meterbridge_dev.stack.processes import MotoServer

        self.moto = MotoServer().start()
        self.sink_proc, self.sink_url = start_sink()
        tag = uuid.uuid4().hex[:6]
        self.tables = {
            "TENANTS_TABLE": f"cold-tenants-{tag}",
            "EVENTS_TABLE": f"cold-events-{tag}",
            "USAGE_TABLE": f"cold-usage-{tag}",
            "IDEMPOTENCY_TABLE": f"cold-idem-{tag}",
        }
        self.env = {
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_ENDPOINT_URL": self.moto.url,
            **self.tables,
            "BASELINE_TABLE": f"cold-baseline-{tag}",
            "NATS_ENABLED": "false",
            "OPENMETER_ENABLED": "true",
            "OPENMETER_BASE_URL": self.sink_url,
            "OPENMETER_API_KEY": OM_KEY,
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "METERBRIDGE_KEY_PEPPER": "bench-pepper-not-secret",
            "METERBRIDGE_ADMIN_AUTH": "iam",  # as template.yaml sets it
            "POWERTOOLS_METRICS_NAMESPACE": "Meterbridge",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
        }
        os.environ.update(self.env)
        self._create_tables()
        self.key = self._tenant_key()

    def _create_tables(self) -> None:
        from meterbridge.dal import dynamo
        from meterbridge_dev.stack.tables import create_tables

        logical = {
            "TenantsTable": self.tables["TENANTS_TABLE"],
            "EventsTable": self.tables["EVENTS_TABLE"],
            "UsageTable": self.tables["USAGE_TABLE"],
            "IdempotencyTable": self.tables["IDEMPOTENCY_TABLE"],
        }
        create_tables(dynamo.client(), logical)
        dynamo.client().create_table(
            TableName=self.env["BASELINE_TABLE"],
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )

    def _tenant_key(self) -> str:
        from meterbridge_dev.stack.invoke_fill import demo_key

        return demo_key()

    def events(self, name: str) -> list[dict[str, Any]]:
        """Two filled events for one sample (the first and a warm second invocation)."""
        from meterbridge_dev.stack.invoke_fill import fill
        from meterbridge_dev.stack.lambda_runtime import load_event

        template = load_event(ROOT / "events" / SAMPLES.get(name, SAMPLES["usage_api"]))
        out = []
        for _ in range(2):
            event = json.loads(json.dumps(template))
            if name == "stripe_webhook":
                body = json.loads(event["body"])
                body["id"] = f"evt_cold_{uuid.uuid4().hex[:16]}"
                event["body"] = json.dumps(body)
            elif name in ("usage_api", BASELINE, *FLOORS):
                body = json.loads(event["body"])
                for e in body:
                    e["id"] = f"cold-{uuid.uuid4().hex}"
                event["body"] = json.dumps(body)
                event["headers"]["content-length"] = str(len(event["body"]))
            out.append(fill(event, WEBHOOK_SECRET))
        return out

    def stop(self) -> None:
        self.sink_proc.terminate()
        self.sink_proc.wait(10)
        self.moto.stop()


def sample(stack: Stack, name: str, path: Path) -> dict[str, Any]:
    env = {
        **os.environ,
        **stack.env,
        "PYTHONPATH": str(ROOT / "shared"),
        "PYTHONDONTWRITEBYTECODE": "",
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(stack.events(name), f)
    try:
        out = subprocess.run(
            [sys.executable, "-c", PROBE, str(path), f.name],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            cwd=ROOT,
            timeout=300,
        )
    finally:
        os.unlink(f.name)
    if out.returncode != 0:
        raise RuntimeError(f"{name}: probe failed\n{out.stderr[-3000:]}")
    data: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    if any(not 200 <= s < 300 for s in data["status"]):
        raise RuntimeError(f"{name}: the sample request failed: {data['result']}")
    return data


def _load(avg: tuple[float, float, float]) -> str:
    return "/".join(f"{x:.2f}" for x in avg)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "shared"))
    sys.path.insert(0, str(ROOT / "dev"))
    sys.path.insert(0, str(ROOT))
    # The setup provisions a tenant through the product's code, whose logger writes to stdout:
    # keep it out of the figures (the logger keeps the stream it was built with).
    with contextlib.redirect_stdout(sys.stderr):
        stack = Stack()
    try:
        return run(stack, args.rounds)
    finally:
        stack.stop()


def run(stack: Stack, rounds: int) -> int:
    targets = {
        BASELINE: BASELINE_PATH,
        FLOOR: FLOOR_PATH,
        FLOOR_MEASURED: FLOOR_MEASURED_PATH,
        **HANDLERS,
    }
    names = list(targets)
    load_before = os.getloadavg()
    # One unmeasured sample each writes any missing bytecode (the deployed package ships
    # compiled .pyc) and makes the moto server's first-use work happen before the rounds.
    for name in names:
        sample(stack, name, targets[name])
    got: dict[str, dict[str, list[float]]] = {
        n: {"init": [], "first": [], "second": [], "cpu": []} for n in names
    }
    uses_fastapi: dict[str, bool] = {}
    deferred: dict[str, list[str]] = {}
    for i in range(rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            data = sample(stack, name, targets[name])
            for k in ("init", "first", "second", "cpu"):
                got[name][k].append(float(data[k]))
            uses_fastapi[name] = bool(data["fastapi"])
            deferred[name] = sorted(
                {m.split(".")[0] for m in data["loaded_by_first"]} & DEFERRED_OF_NOTE
            )
        print(f"  round {i + 1}/{rounds} done", file=sys.stderr)
    load_after = os.getloadavg()
    med = {n: {k: statistics.median(v) for k, v in got[n].items()} for n in names}
    # Each sample's own init + first request, then the median (not the sum of two medians).
    cold = {
        n: statistics.median(a + b for a, b in zip(got[n]["init"], got[n]["first"], strict=True))
        for n in names
    }
    base = cold[BASELINE]
    print(
        f"\nCold invocation = init (module import, what it builds) + the first request, in ms;"
        f" median of {rounds} interleaved rounds of fresh processes (python"
        f" {sys.version.split()[0]}; load average 1/5/15 min {_load(load_before)} before,"
        f" {_load(load_after)} after). First request against a moto server and a loopback"
        " OpenMeter stand-in; the second (warm) request is shown, not judged."
    )
    print(
        f"{'function (sample event)':42} {'init':>7} {'1st req':>8} {'cold':>7} {'ratio':>6}"
        f" {'goal':>6} {'2nd req':>8} {'fastapi':>8}"
    )
    ok = True
    for name in names:
        ratio = cold[name] / base
        verdict = ""
        if name in JUDGED:
            goal = f"<={GOAL:.2f}"
            if ratio > GOAL:
                verdict, ok = "  MISSES GOAL", False
        elif name in NO_FASTAPI:
            goal = "no FA"
            if uses_fastapi[name]:
                verdict, ok = "  MISSES GOAL (imports FastAPI)", False
        else:
            goal = ""
        label = name
        if name not in (BASELINE, *FLOORS):
            label = f"{name} ({SAMPLES[name].removesuffix('.json')})"
        print(
            f"{label[:42]:42} {med[name]['init']:7.1f} {med[name]['first']:8.1f}"
            f" {cold[name]:7.1f} {ratio:6.2f} {goal:>6} {med[name]['second']:8.1f}"
            f" {uses_fastapi[name]!s:>8}{verdict}"
        )
    # CPU time of the sample's own process over init + first request: the work itself, without
    # the waits for a core that a loaded machine adds (nor the servers' time; the same for all).
    print(
        "(CPU of init + first request, ms and ratio: "
        + ", ".join(
            f"{n} {med[n]['cpu']:.1f} ({med[n]['cpu'] / med[BASELINE]['cpu']:.2f}x)" for n in names
        )
        + ")"
    )
    for floor in FLOORS:
        floor_cold, floor_cpu = cold[floor] / base, med[floor]["cpu"] / med[BASELINE]["cpu"]
        verdict = "below it: out of reach" if floor_cold > GOAL else "above it"
        print(
            f"({floor}: {floor_cold:.2f}x of the baseline's cold ms, {floor_cpu:.2f}x of its"
            f" CPU; the goal, {GOAL:.2f}x, is {verdict}; above it, cold ms / CPU: "
            + ", ".join(
                f"{n} {cold[n] / cold[floor]:.2f}x / {med[n]['cpu'] / med[floor]['cpu']:.2f}x"
                for n in JUDGED
            )
            + ")"
        )
    import_ratio = {n: med[n]["init"] / med[BASELINE]["init"] for n in JUDGED}
    print(
        "(init alone, the old measure: "
        + ", ".join(f"{n} {r:.2f}x" for n, r in import_ratio.items())
        + " of the baseline's)"
    )
    print("packages the first request imported (of " + ", ".join(sorted(DEFERRED_OF_NOTE)) + "):")
    for name in names:
        print(f"  {name}: {', '.join(deferred[name]) or 'none'}")
    print("\nall goals met" if ok else "\nsome goals missed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
