"""Per-tenant rate limits on every tenant route (real uvicorn, moto over HTTP, nats-server
for the streaming routes): the usage read, stream tokens and stream connects share the
tenant's ``requests_per_minute`` with ingest, and once a minute's window is refused the
rest of that minute's requests cost no DynamoDB write."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from meterbridge.local.servers import BackgroundServer
from meterbridge.plans import PLANS_FILE_DEFAULT
from tests.conftest import reset_singletons
from tests.factories import make_tenant
from tests.integration.test_auth_cache import dynamodb_calls
from tests.integration.test_stream_support import (
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


def test_ingest_and_usage_reads_share_one_budget(usage_url: str) -> None:
    # Given a tenant that spent its 3 requests on ingest
    _, key = make_tenant()
    _inside_one_minute()
    for i in range(RPM):
        sent = httpx.post(
            f"{usage_url}/v1/events",
            json={"id": f"e{i}", "type": "api.call"},
            headers=auth(key),
            timeout=30,
        )
        assert sent.status_code == 202

    # When it reads its usage in the same minute
    response = httpx.get(f"{usage_url}/v1/usage", headers=auth(key), timeout=30)

    # Then the read is refused too
    _assert_rate_limited(response)


def test_a_refused_minute_costs_no_more_dynamodb_writes(usage_url: str) -> None:
    # Given a tenant whose minute window has just refused a request
    _, key = make_tenant()
    _inside_one_minute(20)
    for _ in range(RPM):
        assert httpx.get(f"{usage_url}/v1/usage", headers=auth(key), timeout=30).status_code == 200
    _assert_rate_limited(httpx.get(f"{usage_url}/v1/usage", headers=auth(key), timeout=30))

    # When it floods both routes with 40 more requests in that minute
    with dynamodb_calls("UpdateItem") as writes:
        flood = [
            httpx.get(f"{usage_url}/v1/usage", headers=auth(key), timeout=30) for _ in range(20)
        ] + [
            httpx.post(
                f"{usage_url}/v1/events",
                json={"id": f"f{i}", "type": "api.call"},
                headers=auth(key),
                timeout=30,
            )
            for i in range(20)
        ]

    # Then every one is refused, and not one touched the rate counters
    for response in flood:
        _assert_rate_limited(response)
    assert [w for w in writes if w["Key"]["pk"]["S"].startswith("RATE#")] == []


@pytest.fixture
async def rated_stream_app(tiny_rate: None, stream_app: dict[str, Any]) -> dict[str, Any]:
    return stream_app


async def test_stream_tokens_and_connects_are_rate_limited(
    rated_stream_app: dict[str, Any],
) -> None:
    # Given a tenant on a plan of 3 requests per minute
    _, key = make_tenant()
    base = rated_stream_app["url"]
    _inside_one_minute()
    async with httpx.AsyncClient(timeout=30) as http:
        # When it asks for 3 stream tokens, then a 4th, then a stream
        tokens = [await http.post(f"{base}/v1/stream-tokens", headers=auth(key)) for _ in range(3)]
        fourth = await http.post(f"{base}/v1/stream-tokens", headers=auth(key))
        connect = await http.get(f"{base}/v1/stream", params={"token": tokens[0].json()["token"]})

    # Then the first 3 pass; the token request and the connect after them are refused
    assert [t.status_code for t in tokens] == [200] * 3
    _assert_rate_limited(fourth)
    _assert_rate_limited(connect)
