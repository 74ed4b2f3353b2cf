"""Per-tenant rate limits on every tenant route (real uvicorn, moto over HTTP, nats-server
for the streaming routes): the usage read, stream tokens and stream connects share the
tenant's in-process bucket with ingest, the usage read has a minute window of its own beside
ingest's, and once a window is refused the rest of that minute costs no DynamoDB write."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from meterbridge.logic import rate
from meterbridge.plans import PLANS_FILE_DEFAULT
from meterbridge_dev.stack.servers import BackgroundServer
from tests.support.builders import make_tenant
from tests.support.dynamo import dynamodb_calls
from tests.support.fixtures import reset_singletons
from tests.support.streams import (
    auth,
    stream_app_fixture,  # noqa: F401 - the stream_app fixture
)

RPM = 3


@pytest.fixture
def tiny_rate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real catalogue with Basic at 3 requests per minute."""
    raw = json.loads(PLANS_FILE_DEFAULT.read_text())
    raw["plans"]["basic"]["requests_per_minute"] = RPM
    path = tmp_path / "rpm.json"
    path.write_text(json.dumps(raw))
    monkeypatch.setenv("METERBRIDGE_PLANS_FILE", str(path))
    reset_singletons()


@pytest.fixture
def usage_url(tiny_rate: None, aws: dict[str, str]) -> Iterator[str]:
    from meterbridge.api.usage import create_app

    with BackgroundServer(create_app()) as srv:
        yield srv.url


def _inside_one_minute(seconds_needed: int = 15) -> None:
    """Start where the requests that follow all fall in one clock minute."""
    if datetime.now(UTC).second > 59 - seconds_needed:
        time.sleep(61 - datetime.now(UTC).second)


def _assert_rate_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(response.headers["retry-after"]) <= 60


def test_the_usage_read_is_rate_limited_per_tenant(usage_url: str) -> None:
    # Given two tenants on a plan of 3 requests per minute
    _, key = make_tenant()
    _, other = make_tenant()
    _inside_one_minute()

    # When one reads its usage 5 times in a minute
    codes = [httpx.get(f"{usage_url}/v1/usage", headers=auth(key), timeout=30) for _ in range(5)]

    # Then 3 pass and the rest get 429 rate_limited with Retry-After; the other tenant reads on
    assert [c.status_code for c in codes[:RPM]] == [200] * RPM
    for response in codes[RPM:]:
        _assert_rate_limited(response)
    assert httpx.get(f"{usage_url}/v1/usage", headers=auth(other), timeout=30).status_code == 200


def test_a_backend_at_its_ingest_limit_leaves_the_usage_read_open(usage_url: str) -> None:
    # Given a tenant that spent its 3 ingest requests of this minute
    _, key = make_tenant()
    _inside_one_minute()
    for i in range(RPM):
        assert _ingest(usage_url, key, f"e{i}").status_code == 202
    _assert_rate_limited(_ingest(usage_url, key, "e-over"))

    # When it reads its usage in the same minute (its dashboard)
    response = httpx.get(f"{usage_url}/v1/usage", headers=auth(key), timeout=30)

    # Then the read has a budget of its own
    assert response.status_code == 200


def _ingest(url: str, key: str, event_id: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/events",
        json={"id": event_id, "type": "api.call"},
        headers=auth(key),
        timeout=30,
    )


def test_a_refused_minute_costs_no_more_dynamodb_writes(usage_url: str) -> None:
    # Given a tenant whose read and ingest windows of this minute have just refused a request
    _, key = make_tenant()
    _inside_one_minute(20)
    for i in range(RPM):
        assert httpx.get(f"{usage_url}/v1/usage", headers=auth(key), timeout=30).status_code == 200
        assert _ingest(usage_url, key, f"e{i}").status_code == 202
    _assert_rate_limited(httpx.get(f"{usage_url}/v1/usage", headers=auth(key), timeout=30))
    _assert_rate_limited(_ingest(usage_url, key, "e-over"))

    # When it sends 6 more of each in that minute (inside its in-process burst of 20)
    with dynamodb_calls("UpdateItem") as writes:
        flood = [
            httpx.get(f"{usage_url}/v1/usage", headers=auth(key), timeout=30) for _ in range(6)
        ] + [_ingest(usage_url, key, f"f{i}") for i in range(6)]

    # Then every one is refused, and not one touched the rate counters
    for response in flood:
        _assert_rate_limited(response)
    assert [w for w in writes if w["Key"]["pk"]["S"].startswith("RATE#")] == []


def test_each_request_takes_one_token_and_an_empty_bucket_refuses_before_any_work(
    usage_url: str,
) -> None:
    # Given a tenant whose key is cached after its first requests
    tenant_id, key = make_tenant()
    for _ in range(2):
        assert httpx.get(f"{usage_url}/v1/usage", headers=auth(key), timeout=30).status_code == 200

    # Then those took one token each (the first in require_tenant, the second in admission)
    tokens, _ = rate._buckets[tenant_id]
    assert rate.MIN_BURST - 2 <= tokens < rate.MIN_BURST - 1

    # When its bucket is empty and it sends a body that is not even JSON
    rate._buckets[tenant_id] = (0.0, time.monotonic())
    with dynamodb_calls("GetItem") as reads, dynamodb_calls("UpdateItem") as writes:
        response = httpx.post(
            f"{usage_url}/v1/events",
            content=b"{not json",
            headers={**auth(key), "Content-Type": "application/json"},
            timeout=30,
        )

    # Then it is refused for its rate (not its body), and no DynamoDB call was made
    _assert_rate_limited(response)
    assert reads == [] and writes == []


@pytest.fixture
async def rated_stream_app(tiny_rate: None, stream_app: dict[str, Any]) -> dict[str, Any]:
    return stream_app


async def test_stream_tokens_and_connects_are_rate_limited(
    rated_stream_app: dict[str, Any],
) -> None:
    # Given a tenant on a plan of 3 requests per minute (an in-process burst of 20)
    _, key = make_tenant()
    base = rated_stream_app["url"]
    async with httpx.AsyncClient(timeout=30) as http:
        # When it asks for stream tokens until refused, then connects with one
        tokens = [await http.post(f"{base}/v1/stream-tokens", headers=auth(key)) for _ in range(21)]
        connect = await http.get(f"{base}/v1/stream", params={"token": tokens[0].json()["token"]})

    # Then the burst passes; the token request and the connect after it are refused
    assert [t.status_code for t in tokens[: int(rate.MIN_BURST)]] == [200] * int(rate.MIN_BURST)
    _assert_rate_limited(tokens[-1])
    _assert_rate_limited(connect)
