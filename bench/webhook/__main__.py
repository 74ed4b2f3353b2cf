"""Warm in-process latency of the Stripe webhook against a moto server, with baselines.

Cases (each measured in the same run, same server, after a warm-up):

- ``lambda applied``: the Lambda handler (Function URL event, Powertools decorators) applying a
  new verified ``customer.subscription.updated``: verify, claim, tenant lookup, outbox put,
  guarded state update, finish (5 DynamoDB calls).
- ``handle applied``: the same through ``stripe_webhook.handle`` (no Lambda wrapper).
- ``lambda duplicate``: a redelivery of an applied event (verify + 1 conditional put).
- baseline ``verify only``: the signature check alone (no I/O).
- baseline ``bare PutItem``: one conditional PutItem on the moto server (one round trip).

    python -m bench.webhook [--n 300]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import stripe

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_bench_0123456789"
GOAL_P99_MS = 30.0


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(fn: Callable[[int], object], n: int, warmup: int = 30) -> list[float]:
    for i in range(warmup):
        fn(-1 - i)
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description="Stripe webhook warm latency")
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()

    os.environ.update(
        {
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
            "NATS_ENABLED": "false",
            "STRIPE_WEBHOOK_SECRET": SECRET,
            "POWERTOOLS_METRICS_DISABLED": "true",
        }
    )
    from meterbridge.local.processes import MotoServer

    server = MotoServer().start()
    try:
        os.environ["AWS_ENDPOINT_URL"] = server.url
        suffix = uuid.uuid4().hex[:6]
        names = {
            lid: f"bench-{lid.lower()}-{suffix}"
            for lid in ("TenantsTable", "EventsTable", "UsageTable", "IdempotencyTable")
        }
        os.environ.update(
            {
                "TENANTS_TABLE": names["TenantsTable"],
                "EVENTS_TABLE": names["EventsTable"],
                "USAGE_TABLE": names["UsageTable"],
                "IDEMPOTENCY_TABLE": names["IdempotencyTable"],
            }
        )
        from meterbridge.dal import dynamo, tenant_state
        from meterbridge.dal import tenants as tenants_dal
        from meterbridge.local import lambda_runtime
        from meterbridge.local.tables import create_tables
        from meterbridge.logic import stripe_webhook
        from meterbridge.settings import get_settings

        get_settings.cache_clear()
        dynamo.reset_clients()
        create_tables(dynamo.client(), names)
        settings = get_settings()
        tenant_id, customer = "t_bench000000000001", "cus_bench0001"
        tenants_dal.put_tenant(
            settings.tenants_table,
            {
                "tenant_id": tenant_id,
                "name": "Bench",
                "email": "b@example.com",
                "plan": "basic",
                "status": "active",
                "created_at": "2026-01-01T00:00:00Z",
            },
        )
        tenant_state.link_customer(settings.tenants_table, tenant_id, customer)

        fixture = (
            ROOT / "events" / f"stripe-{stripe.api_version}" / "customer.subscription.updated.json"
        ).read_text()
        template = json.loads(
            fixture.replace("cus_RkB2mXJ9dQ4sTz", customer).replace("t_0123456789abcdef", tenant_id)
        )
        url_event = json.loads((ROOT / "events" / "functionurl-stripe-webhook.json").read_text())
        created0 = int(time.time())

        def signed(i: int, tag: str) -> tuple[bytes, str]:
            event = dict(template, id=f"evt_bench{tag}{i + 100}", created=created0 + i + 100)
            body = json.dumps(event, indent=2).encode()
            return body, stripe.WebhookSignature.generate_signature_header(body.decode(), SECRET)

        def lambda_event(body: bytes, sig: str) -> dict:
            return {
                **url_event,
                "body": body.decode(),
                "isBase64Encoded": False,
                "headers": {**url_event["headers"], "stripe-signature": sig},
            }

        n = args.n
        pre_lambda = {i: lambda_event(*signed(i, "l")) for i in range(-40, n)}
        pre_handle = {i: signed(i, "h") for i in range(-40, n)}

        def run_lambda(i: int) -> None:
            resp = lambda_runtime.invoke("stripe_webhook", pre_lambda[i])
            assert resp["statusCode"] == 200, resp

        def run_handle(i: int) -> None:
            body, sig = pre_handle[i]
            status, _ = stripe_webhook.handle(body, {"stripe-signature": sig})
            assert status == 200

        dup = pre_lambda[0]

        def run_dup(_: int) -> None:
            resp = lambda_runtime.invoke("stripe_webhook", dup)
            assert json.loads(resp["body"])["outcome"] == "duplicate"

        vbody, vsig = pre_handle[0]

        def run_verify(_: int) -> None:
            stripe_webhook.verify(vbody, vsig, [SECRET])

        def run_put(_: int) -> None:
            dynamo.put_new(
                settings.idempotency_table, {"pk": f"BENCH#{uuid.uuid4().hex}", "sk": "X", "v": 1}
            )

        cases = {}
        # Powertools flushes its metrics buffer (EMF) to stdout outside a Lambda: keep it quiet.
        quiet = contextlib.redirect_stdout(io.StringIO())
        quiet.__enter__()
        cases["lambda applied"] = measure(run_lambda, n)
        cases["handle applied"] = measure(run_handle, n)
        cases["lambda duplicate"] = measure(run_dup, n)
        cases["baseline: verify only"] = measure(run_verify, n)
        cases["baseline: bare PutItem"] = measure(run_put, n)
        quiet.__exit__(None, None, None)
    finally:
        server.stop()

    put_p50 = statistics.median(cases["baseline: bare PutItem"])
    put_p99 = pct(cases["baseline: bare PutItem"], 0.99)
    print(f"Stripe webhook, warm, in-process, moto server over HTTP; n={args.n} per case")
    print(f"{'case':26} {'p50 ms':>8} {'p99 ms':>8} {'p50/PutItem':>12} {'p99/PutItem':>12}")
    for name, samples in cases.items():
        p50, p99 = statistics.median(samples), pct(samples, 0.99)
        print(f"{name:26} {p50:8.2f} {p99:8.2f} {p50 / put_p50:12.1f} {p99 / put_p99:12.1f}")
    p99 = pct(cases["lambda applied"], 0.99)
    verdict = "met" if p99 <= GOAL_P99_MS else "NOT met"
    print(f"goal: lambda applied p99 <= {GOAL_P99_MS:.0f} ms: {verdict} ({p99:.2f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
