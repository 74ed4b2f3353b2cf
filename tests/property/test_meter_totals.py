"""Property: whatever batches arrive (repeats, retries, any values), every meter's period
value equals a plain recomputation over the accepted events (moto server over HTTP)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterbridge.dal import usage as usage_dal
from meterbridge.logic import ingest
from tests.support.meters import measured, recompute, write_catalogue

NOW = datetime.now(UTC)

amounts = st.one_of(
    st.integers(0, 10**6),
    st.decimals(0, 1000, places=3, allow_nan=False).map(str),
    st.floats(0, 1000, allow_nan=False, allow_infinity=False).map(lambda f: round(f, 2)),
)
users = st.one_of(st.integers(0, 20), st.integers(0, 20).map(str), st.sampled_from(["a", "b"]))


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["llm", "gauge", "seen", "credit", "other"]))
    data: dict[str, Any]
    if kind == "llm":
        data = {"tokens": draw(amounts), "user": draw(users)}
        model = draw(st.sampled_from(["m1", "m2", None, "absent"]))
        if model != "absent":
            data["model"] = model
    elif kind == "gauge":
        data = {"gb": draw(amounts), "disk": draw(st.sampled_from(["a", "b"]))}
    elif kind == "seen":
        data = {"user": draw(users)}
    elif kind == "credit":
        data = {"amount": draw(st.integers(-100, 100))}
    else:
        data = {}
    moment = NOW - timedelta(milliseconds=draw(st.integers(0, 3_600_000)))
    return {
        "id": f"e{draw(st.integers(0, 60))}",
        "type": kind,
        "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "data": data,
    }


@pytest.fixture
def catalogue(aws: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_catalogue(tmp_path, monkeypatch)
    # One shard: every batch meets the cells the batches before it wrote, so each write's
    # condition (not the merge over shards on read) must keep the value right.
    monkeypatch.setattr(usage_dal, "SOFT_SHARDS", 1)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batches=st.lists(st.lists(events(), min_size=1, max_size=40), min_size=1, max_size=4))
def test_ingest_totals_equal_a_recomputation(catalogue: None, batches: list[list[Any]]) -> None:
    # Given a fresh tenant / When the batches arrive, the last one retried
    tenant = f"p-{uuid.uuid4().hex[:10]}"
    accepted: list[dict[str, Any]] = []
    for batch in [*batches, batches[-1]]:
        result, stored, _ = ingest.ingest(tenant, "pro", batch, now=NOW)
        ids = {e.id for e in stored}
        firsts: dict[str, dict[str, Any]] = {}
        for event in batch:
            firsts.setdefault(event["id"], event)
        accepted.extend(firsts[i] for i in sorted(ids))
        assert result.accepted == len(ids)
    # Then every meter (and tokens by model) equals a recomputation over the accepted events
    expected = recompute(accepted)
    got = measured(tenant, group_by=("model",))
    for meter in ("events", "calls", "tokens", "users", "peak_gb", "low_gb", "gb", "credits"):
        assert got[meter] == expected[meter], meter
    assert got.get("tokens_by_model", {}) == expected["tokens_by_model"]
