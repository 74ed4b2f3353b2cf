"""``meterbridge stripe sync-catalog`` against the Stripe stand-in (issue 15)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from meterbridge.plans import PLANS_FILE_DEFAULT
from meterbridge_dev.cli.main import app
from tests.support import tenants as tenant_support
from tests.support.fixtures import reset_singletons
from tests.support.tenants import FakeStripe

fake_stripe = tenant_support.fake_stripe
bare_stripe = tenant_support.bare_stripe


def sync(*args: str) -> str:
    done = CliRunner().invoke(app, ["stripe", "sync-catalog", *args])
    assert done.exit_code == 0, done.output
    return done.output


def posts(fake: FakeStripe) -> list[str]:
    return [r["path"] for r in fake.state.requests() if r["method"] == "POST"]


def test_sync_creates_once_writes_nothing_when_stripe_agrees_and_moves_the_lookup_key(
    aws: dict[str, str], bare_stripe: FakeStripe, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given an empty Stripe: a dry run says what it would do and writes nothing
    out = sync("--dry-run")
    assert "basic: would create price (9900 usd monthly)" in out
    assert "pro: would create product" in out and "free" not in out
    assert posts(bare_stripe) == []

    # When it runs for real, then again
    sync()
    second = sync()

    # Then each priced plan has one product and one monthly price under its lookup key
    prices = {p["lookup_key"]: p for p in bare_stripe.state.prices()}
    assert set(prices) == {"meterbridge_basic", "meterbridge_pro"}
    assert prices["meterbridge_basic"]["unit_amount"] == 9900
    assert prices["meterbridge_basic"]["product"] == "meterbridge_basic"
    assert prices["meterbridge_pro"]["recurring"]["interval"] == "month"
    assert {p["id"] for p in bare_stripe.state.products()} == {
        "meterbridge_basic",
        "meterbridge_pro",
    }
    assert "nothing to do" in second
    assert len(posts(bare_stripe)) == 4  # two products, two prices: the second run wrote nothing

    # When Basic's price changes in plans.json
    raw = json.loads(PLANS_FILE_DEFAULT.read_text())
    raw["plans"]["basic"]["base_price_cents"] = 12900
    path = tmp_path / "plans.json"
    path.write_text(json.dumps(raw))
    monkeypatch.setenv("METERBRIDGE_PLANS_FILE", str(path))
    reset_singletons()
    sync()

    # Then a new price holds the lookup key; the old one keeps existing without it
    keyed = [p for p in bare_stripe.state.prices() if p["lookup_key"] == "meterbridge_basic"]
    assert [p["unit_amount"] for p in keyed] == [12900]
    assert len(bare_stripe.state.prices()) == 3


admin = tenant_support.admin


def test_provisioning_subscribes_to_the_synced_price_anchored_to_the_calendar_month(
    aws: dict[str, str], bare_stripe: FakeStripe, admin: Any
) -> None:
    # Given the catalogue synced to Stripe
    sync()
    basic = next(p for p in bare_stripe.state.prices() if p["lookup_key"] == "meterbridge_basic")

    # When a Basic tenant is provisioned
    created = admin.post(
        "/admin/tenants",
        json=tenant_support.body(),
        headers=tenant_support.idem(),
    )
    assert created.status_code == 201, created.text

    # Then its subscription is on the price found by lookup key, renewing on the 1st (UTC)
    [sub] = bare_stripe.state.subscriptions()
    assert (
        sub["items"]["data"][0]["price"]["id"] == basic["id"] != "price_meterbridge_basic_monthly"
    )
    end = datetime.fromtimestamp(sub["current_period_end"], UTC)
    assert (end.day, end.hour, end.minute, end.second) == (1, 0, 0, 0)
    # And the webhook maps that price back to Basic by its lookup key
    from meterbridge.plans import catalog

    assert catalog().plan_for_price(basic["id"], basic["lookup_key"]).id == "basic"  # type: ignore[union-attr]


def test_provisioning_without_the_synced_price_says_which_lookup_key_and_what_to_run(
    aws: dict[str, str], bare_stripe: FakeStripe, admin: Any
) -> None:
    # Given a Stripe account the catalogue was never synced to
    headers = tenant_support.idem()

    # When a Basic tenant is provisioned
    refused = admin.post("/admin/tenants", json=tenant_support.body(), headers=headers)

    # Then 409 names the lookup key and the command, and no subscription exists
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "stripe_price_missing"
    assert "'meterbridge_basic'" in error["message"]
    assert "run meterbridge stripe sync-catalog" in error["message"]
    assert error["details"] == {"lookup_key": "meterbridge_basic", "plan": "basic"}
    assert bare_stripe.state.subscriptions() == []

    # And once the catalogue is synced, the same request completes the tenant on that price
    sync()
    retried = admin.post("/admin/tenants", json=tenant_support.body(), headers=headers)
    assert retried.status_code == 201, retried.text
    [sub] = bare_stripe.state.subscriptions()
    assert sub["items"]["data"][0]["price"]["lookup_key"] == "meterbridge_basic"
