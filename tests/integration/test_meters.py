"""Meters as data against the moto server: every aggregation exact under repeats, retries
and concurrent writers; LATEST by event time; UNIQUE_COUNT exact; SUM hard limits exact."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from meterbridge.dal import usage as usage_dal
from meterbridge.errors import QuotaExceeded
from meterbridge.logic import ingest
from meterbridge_dev.stack.servers import BackgroundServer
from tests.support.builders import event_records, make_tenant, scan_items
from tests.support.meters import measured, recompute, write_catalogue

NOW = datetime.now(UTC)


def _at(seconds_ago: float) -> str:
    return (
        (NOW - timedelta(seconds=seconds_ago))
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _events(rng: random.Random, n: int, prefix: str) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        kind = rng.choice(["llm", "llm", "gauge", "seen", "credit", "other"])
        data: dict[str, Any] = {}
        if kind == "llm":
            data = {
                "tokens": rng.choice([rng.randint(0, 5000), f"{rng.randint(0, 99)}.25"]),
                "model": rng.choice(["small", "large", None]),
                "user": rng.choice([rng.randint(1, 30), f"u{rng.randint(1, 30)}"]),
            }
        elif kind == "gauge":
            data = {"gb": rng.choice([rng.randint(0, 900), 1.5]), "disk": rng.choice("ab")}
        elif kind == "seen":
            data = {"user": f"u{rng.randint(1, 40)}"}
        elif kind == "credit":
            data = {"amount": rng.randint(-50, 50)}
        out.append(
            {
                "id": f"{prefix}-{i}",
                "type": kind,
                "time": _at(rng.randint(0, 3000) + rng.random()),
                "data": data,
            }
        )
    return out


@pytest.fixture
def meters_catalogue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_catalogue(tmp_path, monkeypatch, free_limits={"tokens": 1000})


def _check(tenant: str, sent: list[dict[str, Any]]) -> None:
    expected = recompute(sent)
    got = measured(tenant, group_by=("model",))
    for meter in ("events", "calls", "tokens", "users", "peak_gb", "low_gb", "gb", "credits"):
        assert got[meter] == expected[meter], meter
    assert got.get("tokens_by_model", {}) == {k: v for k, v in expected["tokens_by_model"].items()}


def test_every_aggregation_is_exact_under_repeats_retries_and_eight_writers(
    aws: dict[str, str], meters_catalogue: None
) -> None:
    # Given 8 overlapping batches of events of every kind, each holding repeats
    rng = random.Random(14)
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    pool = _events(rng, 480, "e")
    batches = []
    for w in range(8):
        own = pool[w * 60 : (w + 1) * 60]
        overlap = rng.sample(pool, 40)
        batches.append(own + overlap + own[:10])
    # When 8 writers send them at once, and one batch is retried afterwards
    with ThreadPoolExecutor(8) as executor:
        results = list(executor.map(lambda b: ingest.ingest(tenant, "pro", b, now=NOW)[0], batches))
    retry = ingest.ingest(tenant, "pro", batches[3], now=NOW)[0]
    # Then each distinct event was accepted once, and every meter equals a recomputation
    assert sum(r.accepted for r in results) == len(pool)
    assert retry.accepted == 0 and retry.duplicates == len(batches[3])
    _check(tenant, pool)


def test_latest_is_not_moved_by_a_late_older_event(
    aws: dict[str, str], meters_catalogue: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(usage_dal, "SOFT_SHARDS", 1)  # the conditions, not the merge, decide
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    # Given a gauge of 5 GB reported a minute ago
    newer = {"id": "new", "type": "gauge", "time": _at(60), "data": {"gb": 5, "disk": "a"}}
    ingest.ingest(tenant, "pro", [newer], now=NOW)
    # When a reading from ten minutes ago (99 GB) arrives late
    older = {"id": "old", "type": "gauge", "time": _at(600), "data": {"gb": 99, "disk": "a"}}
    ingest.ingest(tenant, "pro", [older], now=NOW)
    # Then LATEST keeps 5, MAX moves to 99, MIN stays 5
    got = measured(tenant)
    assert (got["gb"], got["peak_gb"], got["low_gb"]) == (5, 99, 5)
    # And a newer reading of 2 GB moves LATEST and MIN, not MAX
    ingest.ingest(
        tenant, "pro", [{"id": "n2", "type": "gauge", "time": _at(1), "data": {"gb": 2}}], now=NOW
    )
    got = measured(tenant)
    assert (got["gb"], got["peak_gb"], got["low_gb"]) == (2, 99, 2)


def test_unique_count_is_exact_over_ten_thousand_events_of_a_thousand_users(
    aws: dict[str, str], meters_catalogue: None
) -> None:
    # Given 10,000 events from 1,000 distinct users (as numbers and as strings: one value)
    rng = random.Random(7)
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    events = [
        {
            "id": f"u-{i}",
            "type": "seen",
            "data": {"user": (lambda u: u if rng.random() < 0.5 else str(u))(i % 1000)},
        }
        for i in range(10_000)
    ]
    rng.shuffle(events)
    # When sent in batches of 1,000 by 2 writers at once, one batch twice
    batches = [events[i : i + 1000] for i in range(0, 10_000, 1000)] + [events[:1000]]
    with ThreadPoolExecutor(2) as executor:
        list(executor.map(lambda b: ingest.ingest(tenant, "pro", b, now=NOW), batches))
    # Then the meter counts each user once
    assert measured(tenant)["users"] == 1000


def test_free_plan_sum_hard_limit_admits_exactly_the_limit_under_eight_writers(
    aws: dict[str, str], meters_catalogue: None
) -> None:
    # Given a Free tenant with 1,000 tokens included, hard
    tenant = f"t-{uuid.uuid4().hex[:8]}"

    # When 8 writers send 20 events of 10 tokens each, in batches of 4 (1,600 > 1,000)
    def writer(w: int) -> int:
        accepted = 0
        for b in range(5):
            batch = [
                {"id": f"w{w}-{b}-{i}", "type": "llm", "data": {"tokens": 10, "user": w}}
                for i in range(4)
            ]
            try:
                accepted += ingest.ingest(tenant, "free", batch, now=NOW)[0].accepted
            except QuotaExceeded as exc:
                accepted += exc.details["accepted"]
        return accepted

    with ThreadPoolExecutor(8) as executor:
        accepted = sum(executor.map(writer, range(8)))
    # Then exactly 100 events (1,000 tokens) were admitted and counted
    assert accepted == 100
    got = measured(tenant, plan="free")
    assert got["tokens"] == 1000 and got["calls"] == 100
    # And an event that would cross the limit by one token is refused
    with pytest.raises(QuotaExceeded):
        ingest.ingest(
            tenant, "free", [{"id": "x", "type": "llm", "data": {"tokens": 1, "user": 1}}], now=NOW
        )


def test_an_event_that_would_cross_a_sum_limit_is_refused_and_smaller_ones_before_fit(
    aws: dict[str, str], meters_catalogue: None
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    # Given 990 of 1,000 tokens used
    ingest.ingest(tenant, "free", [{"id": "a", "type": "llm", "data": {"tokens": 990, "user": 1}}])
    # When a batch of 6, 5 and 1 tokens arrives
    batch = [
        {"id": f"b{i}", "type": "llm", "data": {"tokens": n, "user": 1}}
        for i, n in enumerate([6, 5, 1])
    ]
    with pytest.raises(QuotaExceeded) as info:
        ingest.ingest(tenant, "free", batch)
    # Then the 6 fits, the 5 would cross the limit and ends the batch there
    assert info.value.details["accepted"] == 1 and info.value.details["refused"] == 2
    assert measured(tenant, plan="free")["tokens"] == 996


@pytest.fixture
def server(aws: dict[str, str], meters_catalogue: None) -> Iterator[str]:
    from meterbridge.api.usage import create_app

    with BackgroundServer(create_app()) as srv:
        yield srv.url


def test_a_bad_or_missing_value_refuses_the_batch_and_stores_nothing(
    server: str, aws: dict[str, str]
) -> None:
    # Given a tenant and a batch with a good event, a missing value, a word, a negative
    tenant, key = make_tenant("pro")
    batch = [
        {"id": "ok", "type": "llm", "data": {"tokens": 5, "user": "u1"}},
        {"id": "missing", "type": "llm", "data": {"user": "u1"}},
        {"id": "word", "type": "gauge", "data": {"gb": "lots"}},
        {"id": "negative", "type": "llm", "data": {"tokens": -3, "user": "u1"}},
        {"id": "object", "type": "seen", "data": {"user": {"id": 1}}},
        {"id": "credit", "type": "credit", "data": {"amount": "-2.5"}},
    ]
    # When it is sent
    resp = httpx.post(
        f"{server}/v1/events", json=batch, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    # Then 400, details naming each bad event's index, meter and path; nothing stored
    assert resp.status_code == 400
    details = resp.json()["error"]["details"]
    named = [(d["index"], d["errors"][0]["meter"], d["errors"][0]["path"]) for d in details]
    assert named == [
        (1, "tokens", "$.tokens"),
        (2, "peak_gb", "$.gb"),
        (3, "tokens", "$.tokens"),
        (4, "users", "$.user"),
    ]
    assert event_records(aws["EventsTable"]) == []
    assert [i for i in scan_items(aws["UsageTable"]) if not i["pk"].startswith("RATE#")] == []
    # And the same batch without the bad events is accepted, the credit counted negative
    good = [batch[0], batch[5]]
    resp = httpx.post(
        f"{server}/v1/events", json=good, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    assert resp.status_code == 202
    usage = httpx.get(
        f"{server}/v1/usage?group_by=model", headers={"Authorization": f"Bearer {key}"}
    ).json()["current"]["meters"]
    by = {m["meter"]: m for m in usage}
    assert by["credits"]["used"] == -2.5 and by["tokens"]["used"] == 5
    assert by["tokens"]["aggregation"] == "SUM" and by["tokens"]["unit"] == "token"
    assert by["tokens"]["groups"] == [{"group_by": {"model": None}, "used": 5}]
    assert by["calls"]["groups"] is None
    assert tenant


def test_threshold_alerts_fire_for_sum_max_and_unique_meters(
    aws: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a Pro plan with soft limits on a SUM, a MAX and a UNIQUE_COUNT meter
    write_catalogue(tmp_path, monkeypatch, pro_limits={"tokens": 100, "peak_gb": "2.5", "users": 2})
    tenant = f"t-{uuid.uuid4().hex[:8]}"

    def alerts(events: list[dict[str, Any]]) -> set[tuple[str, int, Any]]:
        _, _, raised = ingest.ingest(tenant, "pro", events, now=NOW)
        return {(a.data["meter"], a.data["threshold_percent"], a.data["used"]) for a in raised}

    # When 85 tokens from one user arrive / Then tokens crosses 80% (used is the sum)
    assert alerts([{"id": "a", "type": "llm", "data": {"tokens": 85, "user": "u1"}}]) == {
        ("tokens", 80, 85)
    }
    # When a gauge of 3.5 GB arrives / Then the MAX meter crosses 80% and 100% at once
    assert alerts([{"id": "g", "type": "gauge", "data": {"gb": "3.5"}}]) == {
        ("peak_gb", 80, 3.5),
        ("peak_gb", 100, 3.5),
    }
    # When a second distinct user arrives / Then the UNIQUE_COUNT meter goes from 50% to its
    # limit (both thresholds), and tokens (now 90) fires nothing again
    assert alerts([{"id": "b", "type": "llm", "data": {"tokens": 5, "user": "u2"}}]) == {
        ("users", 80, 2),
        ("users", 100, 2),
    }
