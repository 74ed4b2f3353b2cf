"""Quotas and concurrency: hard limits are exact, retries are harmless, paid plans count overage."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from meterbridge.plans import PLANS_FILE_DEFAULT
from meterbridge_dev.stack.servers import BackgroundServer
from tests.support.builders import event_records, make_tenant
from tests.support.fixtures import reset_singletons


@pytest.fixture
def small_plans(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real catalogue with small limits, so a test can reach them."""
    raw = json.loads(PLANS_FILE_DEFAULT.read_text())
    raw["plans"]["free"]["limits"]["api_calls"] = 25
    raw["plans"]["free"]["requests_per_minute"] = 1000
    raw["plans"]["basic"]["limits"]["api_calls"] = 10
    path = tmp_path / "plans.json"
    path.write_text(json.dumps(raw))
    monkeypatch.setenv("METERBRIDGE_PLANS_FILE", str(path))
    reset_singletons()


@pytest.fixture
def server(aws: dict[str, str]) -> Iterator[str]:
    from meterbridge.api.usage import create_app

    with BackgroundServer(create_app()) as srv:
        yield srv.url


def _post(url: str, key: str, body: object) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/events", json=body, timeout=30, headers={"Authorization": f"Bearer {key}"}
    )


def _meter(url: str, key: str, meter: str) -> dict:
    report = httpx.get(f"{url}/v1/usage", headers={"Authorization": f"Bearer {key}"}).json()
    return {m["meter"]: m for m in report["current"]["meters"]}[meter]


def _stored(aws: dict) -> int:
    """Tenant events in the outbox (threshold alerts live there too, and are not counted)."""
    items = event_records(aws["EventsTable"])
    return sum(1 for i in items if i["event_type"] != "usage.threshold_reached")


def test_twenty_concurrent_retries_store_each_event_once(server: str, aws: dict) -> None:
    # Given a batch of 50 events
    _, key = make_tenant("basic")
    batch = [{"id": f"e{i}", "type": "api.call"} for i in range(50)]
    # When 20 clients send it at once
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: _post(server, key, batch), range(20)))
    # Then all succeed, together they accepted each event once, and each is stored once
    assert {a.status_code for a in answers} == {202}
    assert sum(a.json()["accepted"] for a in answers) == 50
    assert sum(a.json()["duplicates"] for a in answers) == 50 * 19
    assert _stored(aws) == 50
    assert _meter(server, key, "api_calls")["used"] == 50


def test_hard_quota_admits_exactly_the_limit_under_eight_writers(
    small_plans: None, server: str, aws: dict
) -> None:
    # Given a Free tenant with a hard limit of 25 api calls
    _, key = make_tenant("free")

    # When 8 writers send 10 distinct single events each (80 > 25)
    def writer(w: int) -> list[int]:
        return [
            _post(server, key, {"id": f"w{w}-{i}", "type": "api.call"}).status_code
            for i in range(10)
        ]

    with ThreadPoolExecutor(8) as pool:
        codes = [c for batch in pool.map(writer, range(8)) for c in batch]
    # Then exactly 25 were admitted, the rest refused with 429, and 25 are stored
    assert codes.count(202) == 25 and codes.count(429) == 55
    assert _stored(aws) == 25
    usage = _meter(server, key, "api_calls")
    assert usage["used"] == 25 and usage["remaining"] == 0 and usage["overage"] == 0


def test_hard_quota_refusal_says_when_it_resets_and_fills_to_the_limit(
    small_plans: None, server: str, aws: dict
) -> None:
    # Given a Free tenant 20 calls into its 25
    _, key = make_tenant("free")
    assert (
        _post(server, key, [{"id": f"a{i}", "type": "api.call"} for i in range(20)]).status_code
        == 202
    )
    # When a batch of 10 arrives
    resp = _post(server, key, [{"id": f"b{i}", "type": "api.call"} for i in range(10)])
    # Then the first 5 fit, the rest is refused with quota_exceeded and a Retry-After
    assert resp.status_code == 429
    body = resp.json()["error"]
    assert body["code"] == "quota_exceeded"
    assert body["details"]["accepted"] == 5 and body["details"]["refused"] == 5
    assert int(resp.headers["retry-after"]) > 0
    assert _meter(server, key, "api_calls")["used"] == 25
    # And a retry of the same batch stores nothing more
    again = _post(server, key, [{"id": f"b{i}", "type": "api.call"} for i in range(10)])
    assert again.status_code == 429 and again.json()["error"]["details"]["duplicates"] == 5


def test_paid_plan_accepts_overage_and_prices_it(small_plans: None, server: str, aws: dict) -> None:
    # Given a Basic tenant with 10 api calls included ($0.10 per started 1,000 over)
    _, key = make_tenant("basic")
    # When it sends 15
    resp = _post(server, key, [{"id": f"o{i}", "type": "api.call"} for i in range(15)])
    # Then all are accepted and the overage is counted and priced
    assert resp.status_code == 202 and resp.json()["accepted"] == 15
    usage = _meter(server, key, "api_calls")
    assert usage["used"] == 15 and usage["overage"] == 5 and usage["overage_charge_cents"] == 10
    report = httpx.get(f"{server}/v1/usage", headers={"Authorization": f"Bearer {key}"}).json()
    assert report["current"]["estimated_charge_cents"] == 9900 + 10


def test_thresholds_fire_once_per_period(small_plans: None, server: str, aws: dict) -> None:
    # Given a Basic tenant with 10 api calls included
    _, key = make_tenant("basic")
    # When usage goes to 8 (80%), then 9, then 12 (past 100%)
    for ids in (range(8), range(8, 9), range(9, 12)):
        assert (
            _post(server, key, [{"id": f"t{i}", "type": "api.call"} for i in ids]).status_code
            == 202
        )
    # Then one alert per threshold is in the outbox
    items = event_records(aws["EventsTable"])
    alerts = sorted(
        json.loads(i["event"])["data"]["threshold_percent"]
        for i in items
        if i["event_type"] == "usage.threshold_reached"
    )
    assert alerts == [80, 100]


def test_rate_limit_answers_429_with_retry_after(
    small_plans: None, server: str, aws: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given a plan allowing 3 requests per minute
    raw = json.loads(PLANS_FILE_DEFAULT.read_text())
    raw["plans"]["free"]["requests_per_minute"] = 3
    path = tmp_path / "rpm.json"
    path.write_text(json.dumps(raw))
    monkeypatch.setenv("METERBRIDGE_PLANS_FILE", str(path))
    reset_singletons()
    # When 5 requests arrive in one clock minute (the window): if a slow run lets them
    # straddle two minutes, again with a fresh tenant in the new one
    for _ in range(3):
        _, key = make_tenant("free")
        minute = datetime.now(UTC).replace(second=0, microsecond=0)
        codes = [_post(server, key, {"id": f"r{i}", "type": "x"}) for i in range(5)]
        if datetime.now(UTC).replace(second=0, microsecond=0) == minute:
            break
    # Then the first 3 pass and the others are rate limited with a Retry-After
    assert [c.status_code for c in codes[:3]] == [202] * 3
    limited = codes[3:]
    assert all(
        c.status_code == 429 and c.json()["error"]["code"] == "rate_limited" for c in limited
    )
    assert all(1 <= int(c.headers["retry-after"]) <= 60 for c in limited)
