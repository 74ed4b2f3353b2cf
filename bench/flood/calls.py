"""DynamoDB calls per admitted request of a flooding tenant: a count, not a timing.

    python -m bench.flood.calls [--burst 400] [--pairs 100]

Tenant A (Basic: a bucket of 167) sends ``--burst`` requests at once, alternately
``POST /v1/events`` (one event) and ``GET /v1/usage``, to the usage API in this process (the
ASGI app as uvicorn runs it: thread pool, gate; a moto server on loopback). Its whole burst
then waits at its gate, the worst case for whoever shares the process. Printed: what was
admitted and refused, and the DynamoDB calls its requests made, by operation, with the reads
waiting at the gate shared (``run_shared``) and the lookups of its new key shared (A's key is
new: its burst arrives before the first lookup is cached), and, as the baseline, each read and
each lookup on its own; then with the window slots reserved in chunks (logic/rate.py), and
without them (one write per request, ``CHUNK_SHARE`` 0). A steady tenant's pair of requests
(one each) is the unit of the other count: ``--pairs`` of tenant B (Pro) one after another,
with and without chunks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import uuid
from collections import Counter
from typing import Any

from bench.flood.__main__ import ENV, tables

_CHUNK_SHARE: list[float] = []  # logic/rate.py's own share, read at the first run


def _run(
    burst: int,
    shared: bool,
    shared_lookup: Any,
    chunks: bool = False,
    plan: str = "basic",
    steady: bool = False,
) -> tuple[Counter[str], Counter[str]]:
    import httpx
    from tests.support.builders import make_tenant

    from meterbridge.api import blocking, tenant_auth, usage
    from meterbridge.dal import dynamo
    from meterbridge.logic import rate
    from meterbridge.logic.auth import authenticate

    rate.reset()
    if not _CHUNK_SHARE:
        _CHUNK_SHARE.append(rate.CHUNK_SHARE)
    # Without chunks, each admitted request takes its window slot with a write of its own.
    rate.CHUNK_SHARE = _CHUNK_SHARE[0] if chunks else 0.0
    if shared:
        usage.run_shared = blocking.run_shared
        tenant_auth._authenticate = shared_lookup
    else:  # the baseline: every read and every lookup of a key not cached on its own

        async def alone(request: Any, key: Any, each: Any, once: Any) -> Any:
            return await blocking.run_blocking(request, lambda: (each(), once())[1])

        async def lookup(request: Any, key: str) -> Any:
            return await blocking.run_blocking(request, authenticate, key)

        usage.run_shared = alone
        tenant_auth._authenticate = lookup
    key = make_tenant(plan=plan)[1]
    calls: Counter[str] = Counter()

    def count(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    events = dynamo.client().meta.events
    events.register("before-call.dynamodb", count)
    answers: Counter[str] = Counter()

    async def flood() -> None:
        app = usage.create_app()
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

            async def one(n: int) -> None:
                if n % 2:
                    resp = await client.get("/v1/usage", headers=headers)
                else:
                    body = json.dumps({"id": uuid.uuid4().hex, "type": "api.call", "data": {}})
                    resp = await client.post(
                        "/v1/events",
                        content=body,
                        headers={**headers, "Content-Type": "application/json"},
                    )
                answers[f"{'GET' if n % 2 else 'POST'} {resp.status_code}"] += 1

            if steady:  # one request after another: a steady tenant's pairs
                for n in range(burst):
                    await one(n)
            else:
                await asyncio.gather(*(one(n) for n in range(burst)))

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the metrics' EMF lines
            asyncio.run(flood())
    finally:
        events.unregister("before-call.dynamodb", count)
    return answers, calls


def main() -> int:
    parser = argparse.ArgumentParser(description="DynamoDB calls per admitted flood request")
    parser.add_argument("--burst", type=int, default=400)
    parser.add_argument("--pairs", type=int, default=100)
    args = parser.parse_args()
    os.environ.update(ENV)
    os.environ["POWERTOOLS_LOG_LEVEL"] = "ERROR"
    from meterbridge_dev.stack.processes import MotoServer

    with MotoServer() as moto:
        tables(moto.url)
        from meterbridge.api import tenant_auth

        shared_lookup = tenant_auth._authenticate
        # Warm: imports and the tables' first calls are not the flood's.
        _run(4, False, shared_lookup)
        print(
            f"flood calls: tenant A (Basic) sends {args.burst} requests at once, alternately "
            "POST /v1/events (1 event) and GET /v1/usage; DynamoDB calls of its requests:"
        )
        rows = [
            ("baseline: each read alone", False, False),
            ("reads shared at the gate", True, False),
            ("+ window slots in chunks", True, True),
        ]
        for label, shared, chunks in rows:
            answers, calls = _run(args.burst, shared, shared_lookup, chunks)
            admitted = sum(v for k, v in answers.items() if not k.endswith(" 429"))
            _line(label, f"admitted {admitted:>4}", admitted, "admitted request", calls)
            told = ", ".join(f"{k} {v}" for k, v in sorted(answers.items()))
            print(f"  {'':<26} answers: {told}")
        print(
            f"steady tenant B (Pro): {args.pairs} pairs (POST /v1/events, GET /v1/usage) one "
            "request after another; DynamoDB calls per pair:"
        )
        for label, chunks in (("one slot per request", False), ("window slots in chunks", True)):
            answers, calls = _run(2 * args.pairs, True, shared_lookup, chunks, "pro", True)
            pairs = sum(answers.values()) // 2
            _line(label, f"pairs {pairs:>4}", pairs, "pair", calls)
    return 0


def _line(label: str, told: str, count: int, per: str, calls: Counter[str]) -> None:
    total = sum(calls.values())
    ops = ", ".join(f"{op} {n}" for op, n in sorted(calls.items()))
    print(
        f"  {label:<26} {told}  calls {total:>5}  per {per} {total / max(count, 1):5.2f}  ({ops})"
    )


if __name__ == "__main__":
    raise SystemExit(main())
