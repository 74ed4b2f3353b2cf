"""The money path under chaos, end to end, every part a real process (issue 10).

Three tenants send ``CHAOS_EVENTS`` usage events (default in ``harness.chaos_events``) from six
concurrent clients, with duplicates inside batches and whole batches re-sent, while in
stretches: OpenMeter answers 500, 429 with Retry-After, and hangs past the client timeout;
nats-server is killed (-9) and restarted, twice; a flush run is killed (-9) mid-batch while
another overlaps it; DynamoDB throttles 30% of calls; Stripe webhooks arrive twice and out of
order (one of them suspends a tenant for a moment); SSE clients drop and resume with
``Last-Event-ID``. Then, once a clean flush finds nothing left:

- OpenMeter holds exactly the accepted events, by ``(source, id)``: none lost, none extra;
- ``GET /v1/usage`` equals each tenant's accepted count;
- every SSE client saw each of its tenant's usage events exactly once;
- tenant plan and status match the final Stripe state;
- a fourth tenant's period closes under the faults (its Stripe test clock crosses the period end;
  ``invoice.created`` is handled by webhook Lambda runs twice concurrently, again, and once more
  after the invoice was finalized): one item per meter at ``/v1/usage``'s overage, and
  ``billing reconcile`` finds zero unbilled and zero double-billed cents.

Bounded: the run gives up at its budget: ``CHAOS_BUDGET_S`` if set, else 270 s scaled by a
calibration of the machine taken at the start (``harness.chaos_budget``, at most 2700 s), and
pytest-timeout stops it past the largest budget; every process is killed in ``finally``. The
budget and the figures are printed whatever the outcome.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from tests.chaos.harness import (
    MAX_BUDGET_S,
    STRIPE_SOURCE,
    USAGE_SOURCE,
    ChaosRun,
    chaos_budget,
    chaos_events,
)

# The hard stop behind the run's own budget: past the largest budget it can be given.
HARD_STOP_S = max(MAX_BUDGET_S, float(os.environ.get("CHAOS_BUDGET_S") or 0)) + 60


@pytest.mark.slow
@pytest.mark.timeout(HARD_STOP_S)
def test_money_path_survives_chaos(tmp_path: Path) -> None:
    # Given the local stack as real processes, three tenants and their live streams
    budget = chaos_budget()
    print(f"\nchaos budget: {budget.seconds:.0f} s ({budget.how})")
    run = ChaosRun(tmp_path, chaos_events(), budget.seconds)
    try:
        # When usage, webhooks and stream reconnects meet every scheduled fault, then drain
        run.run()
    finally:
        run.finish_figures()
        run.stop()
        print("\n" + "\n".join(run.figures.lines(run.ledger)))
        if run.errors:
            print("  errors: " + "; ".join(run.errors))

    # Then no client, sender or fault driver failed
    assert run.errors == []
    tenants = run.ledger.tenants
    for tenant in tenants.values():
        assert tenant.unexpected == []
        # ... and each 202 counted each new id once (no answer was lost in this run)
        if tenant.lost_answers == 0:
            assert tenant.accepted_reported == len(tenant.accepted)

    # Then OpenMeter holds exactly the accepted usage events: none lost, none extra
    recorded = Counter((e["source"], e["id"]) for e in run.sink_events)
    usage = {k for k in recorded if k[0].startswith(USAGE_SOURCE)}
    accepted = {(USAGE_SOURCE + t.tenant_id, i) for t in tenants.values() for i in t.accepted}
    assert len(accepted) == run.events
    accepted |= run.close_openmeter()  # the period-close tenant's usage
    assert accepted - usage == set(), "accepted events missing from OpenMeter"
    assert usage - accepted == set(), "events in OpenMeter that no client was told were accepted"
    # ... and each Stripe event once (the sink, like OpenMeter, dedupes re-sends by (source, id))
    stripe_ids = {e["id"] for sc in run.scenarios for e in sc.events.values()}
    assert {i for s, i in recorded if s == STRIPE_SOURCE} == stripe_ids

    # Then /v1/usage totals equal the accepted counts
    assert run.usage == {t.tenant_id: len(t.accepted) for t in tenants.values()}

    # Then every SSE client saw each of its tenant's usage events exactly once
    for tenant_id, clients in run.sse.items():
        for client in clients:
            seen = client.usage_ids()
            assert client.connects >= 2, f"{client.name} never resumed"
            assert set(seen) == tenants[tenant_id].accepted, client.name
            assert [i for i, n in seen.items() if n > 1] == [], f"{client.name} saw repeats"

    # Then each tenant's plan and status are the final Stripe state
    assert run.states == {sc.tenant_id: (sc.final_plan, sc.final_status) for sc in run.scenarios}

    # Then the period that closed under the faults is billed to the cent, once: one invoice item
    # per meter at /v1/usage's overage, on the invoice Stripe finalized and charged
    close = run.close
    assert close is not None
    assert close.invoice_status == "paid"
    assert sorted((i["metadata"]["meter"], i["amount"]) for i in close.items) == sorted(
        close.expected.items()
    )
    assert all(i["metadata"]["period"] == close.period for i in close.items)
    # ... and billing reconcile finds zero unbilled and zero double-billed cents
    report = close.reconcile
    assert report["exit"] == 0
    assert report["difference_cents"] == 0
    rows = {r["meter"]: r for r in report["rows"] if r["tenant_id"] == close.tenant_id}
    assert {m: r["invoiced_cents"] for m, r in rows.items()} == close.expected
    assert all(r["difference_cents"] == 0 for r in report["rows"])
