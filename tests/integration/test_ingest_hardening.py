"""Ingest refuses what OpenMeter would refuse or miscount (issue 18, items 2, 10, 11).

The usage API runs under uvicorn on loopback (httpx over a socket), tables on the moto server;
the flush delivers to the OpenMeter stand-in, which parses as strictly as Go's encoding/json.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from meterbridge.api.usage import create_app
from meterbridge.logic import flush
from meterbridge_dev.stack.servers import BackgroundServer
from tests.support import flush as flush_support
from tests.support.builders import event_records, make_tenant
from tests.support.flush import fast_client, fast_config

sink = flush_support.sink  # the OpenMeter stand-in fixture


@pytest.fixture
def api(aws: dict[str, str]) -> Iterator[httpx.Client]:
    with (
        BackgroundServer(create_app()) as server,
        httpx.Client(base_url=server.url, timeout=30.0) as client,
    ):
        yield client


def _post(api: httpx.Client, key: str, body: bytes | str) -> httpx.Response:
    return api.post(
        "/v1/events",
        content=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )


@pytest.mark.parametrize(
    ("number", "path"),
    [
        ('{"v": 1e400}', ["data", "v"]),
        ('{"a": {"b": [1, NaN]}}', ["data", "a", "b", "1"]),
        ('{"deep": [[{"x": Infinity}]]}', ["data", "deep", "0", "0", "x"]),
        ('{"neg": -Infinity}', ["data", "neg"]),
        ('{"n": -2.5e308}', ["data", "n"]),
        ('{"big": 1' + "0" * 310 + "}", ["data", "big"]),
    ],
)
def test_a_number_openmeter_would_refuse_is_a_400_naming_index_and_path(
    api: httpx.Client, aws: dict[str, str], number: str, path: list[str]
) -> None:
    # Given a batch whose second event holds a non-finite or overflowing number
    _, key = make_tenant("basic")
    body = '[{"id": "ok-1", "type": "api.call", "data": {"v": 1.5e308}},'
    body += '{"id": "bad-1", "type": "api.call", "data": ' + number + "}]"
    # When it is posted
    resp = _post(api, key, body)
    # Then it is a 400 naming the event's index and the number's path, and nothing is stored
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["code"] == "invalid_request" and "nothing was stored" in error["message"]
    [problem] = error["details"]
    assert problem["index"] == 1
    assert problem["errors"][0]["loc"] == path
    assert "finite" in problem["errors"][0]["message"]
    assert event_records(aws["EventsTable"]) == []


def test_large_but_finite_numbers_and_digit_strings_are_accepted(
    api: httpx.Client, aws: dict[str, str]
) -> None:
    # Given numbers at the edge of float64 and a long digit string (not a number)
    _, key = make_tenant("basic")
    event = {
        "id": "edge-1",
        "type": "api.call",
        "data": {"max": 1.7976931348623157e308, "int": 10**308, "text": "9" * 400},
    }
    # When posted, then accepted and stored as strict JSON
    resp = _post(api, key, json.dumps(event))
    assert resp.status_code == 202, resp.text
    [record] = event_records(aws["EventsTable"])
    json.loads(record["event"], parse_constant=pytest.fail)


@pytest.mark.parametrize(
    "event_type",
    [
        "payment.success",
        "payment.failed",
        "subscription.started",
        "subscription.ended",
        "usage.threshold_reached",
        "tenant.suspended",
        "key.revoked",
        "Payment.Success",
    ],
)
def test_a_reserved_type_is_refused_naming_the_type_and_index(
    api: httpx.Client, aws: dict[str, str], event_type: str
) -> None:
    # Given a batch whose third event claims a type meterbridge itself emits
    _, key = make_tenant("pro")
    batch = [
        {"id": "u-1", "type": "api.call", "data": {}},
        {"id": "u-2", "type": "usage.report", "data": {}},
        {"id": "u-3", "type": event_type, "data": {"amount": 100}},
    ]
    # When it is posted
    resp = _post(api, key, json.dumps(batch))
    # Then 400 names the index and the type, and nothing is stored
    assert resp.status_code == 400, resp.text
    [problem] = resp.json()["error"]["details"]
    assert problem["index"] == 2 and problem["errors"][0]["loc"] == ["type"]
    assert event_type in problem["errors"][0]["message"]
    assert event_records(aws["EventsTable"]) == []


def test_dataschema_is_accepted_and_carried_to_openmeter(
    api: httpx.Client, aws: dict[str, str], sink: tuple[object, str]
) -> None:
    # Given an event with the optional CloudEvents attribute dataschema
    state, url = sink
    _, key = make_tenant("basic")
    schema = "https://schemas.example.com/api-call/v1.json"
    event = {"id": "ds-1", "type": "api.call", "dataschema": schema, "data": {"n": 1}}
    # When it is posted and flushed
    resp = _post(api, key, json.dumps(event))
    assert resp.status_code == 202, resp.text
    result = flush.flush_outbox(None, config=fast_config(), client=fast_client(url))
    # Then OpenMeter (the strict stand-in) received it with the same dataschema
    assert result.sent == 1, result
    [received] = state.events()  # type: ignore[attr-defined]
    assert received["id"] == "ds-1" and received["dataschema"] == schema


@pytest.mark.parametrize("bad", ["", "not a uri", "relative/path", 5])
def test_an_invalid_dataschema_is_a_400(
    api: httpx.Client, aws: dict[str, str], bad: object
) -> None:
    _, key = make_tenant("basic")
    event = {"id": "ds-2", "type": "api.call", "dataschema": bad, "data": {}}
    resp = _post(api, key, json.dumps(event))
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["details"][0]["errors"][0]["loc"] == ["dataschema"]
    assert event_records(aws["EventsTable"]) == []
