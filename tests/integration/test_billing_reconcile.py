"""Reconcile (issue 15): the report's shape over HTTP and the CLI, a non-zero exit and the
unbilled metric when Stripe lacks a line, and ``--fix`` adding it exactly once."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from meterbridge_dev.cli.main import app
from meterbridge_streaming.metrics import BILLING_UNBILLED_CENTS
from tests.support import tenants as tenant_support
from tests.support.billing import PERIOD, setup
from tests.support.fixtures import reset_singletons
from tests.support.tenants import ADMIN_TOKEN, AUTH, FakeStripe
from tests.support.webhooks import deliver

fake_stripe = tenant_support.fake_stripe
__all__ = ["fake_stripe", "setup"]


def run(*args: str) -> tuple[int, dict[str, Any]]:
    done = CliRunner().invoke(app, ["billing", "reconcile", "--period", PERIOD, "--json", *args])
    return done.exit_code, json.loads(done.output)


def test_a_missing_line_is_reported_alarmed_and_fixed_once(
    setup: tuple[FakeStripe, str, dict[str, Any], dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, tenant_id, invoice, event = setup
    # Given the invoice was finalized before its overage was added (nothing on any invoice)
    fake.state.finalize_invoice(invoice["id"])
    assert deliver(event)[0] == 200

    # When finance reconciles the period over HTTP and with the CLI
    monkeypatch.setenv("METERBRIDGE_ADMIN_TOKEN", ADMIN_TOKEN)
    reset_singletons()
    from meterbridge.api.admin import create_app

    with TestClient(create_app()) as admin:
        answer = admin.get(f"/admin/billing/reconcile?period={PERIOD}", headers=AUTH)
        bad = admin.get("/admin/billing/reconcile?period=2026-13", headers=AUTH)
    code, report = run()

    # Then both report the tenant's 250 cents as not invoiced; the CLI exits 1; the metric says so
    assert answer.status_code == 200, answer.text
    assert bad.status_code in (400, 422), bad.text
    for body in (answer.json(), report):
        assert body["period"] == PERIOD
        assert {k for k in body["rows"][0]} == {
            "tenant_id",
            "meter",
            "metered_cents",
            "invoiced_cents",
            "difference_cents",
        }
        assert [r for r in body["rows"] if r["tenant_id"] == tenant_id] == [
            {
                "tenant_id": tenant_id,
                "meter": "queries",
                "metered_cents": 250,
                "invoiced_cents": 0,
                "difference_cents": 250,
            }
        ]
        assert body["difference_cents"] == 250
    assert code == 1
    assert BILLING_UNBILLED_CENTS.labels(period=PERIOD)._value.get() == 250

    # When --fix runs twice
    first, fixed = run("--fix")
    second, again = run("--fix")

    # Then one pending item for the customer carries the difference; both runs end at zero
    assert (first, second) == (0, 0), (fixed, again)
    items = [i for i in fake.state.invoiceitems() if i["customer"] == invoice["customer"]]
    assert [(i["amount"], i["invoice"], i["metadata"]["period"]) for i in items] == [
        (250, None, PERIOD)
    ]
    assert again["difference_cents"] == 0 and again["fixed"] == []
    assert BILLING_UNBILLED_CENTS.labels(period=PERIOD)._value.get() == 0
