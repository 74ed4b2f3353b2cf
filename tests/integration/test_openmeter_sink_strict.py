"""The OpenMeter stand-in's ingest route answers as OpenMeter does (issue 17, issue 18 item 2).

What OpenMeter's Go handler (``openmeter/ingest/httpdriver``) and spec (``api/openapi.yaml``)
do: the Content-Type header is matched exactly (``application/json`` too), the body is read by
``encoding/json`` (no NaN/Infinity, no float64 overflow, UTF-8), every refusal is a 400 problem.
Over real HTTP: uvicorn on loopback, httpx as the client.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from meterbridge.adapters.openmeter import OpenMeterRejected
from meterbridge_dev.fakes.openmeter_sink import SinkState, create_app
from meterbridge_dev.stack.servers import BackgroundServer
from tests.support.flush import API_KEY, fast_client
from tests.support.openmeter import BATCH, SINGLE, cloudevent


@pytest.fixture
def sink() -> Iterator[tuple[SinkState, httpx.Client]]:
    state = SinkState(API_KEY)
    with (
        BackgroundServer(create_app(state)) as server,
        httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"}) as client,
    ):
        yield state, client


def _post(client: httpx.Client, body: bytes, content_type: str = BATCH) -> httpx.Response:
    return client.post("/api/v1/events", content=body, headers={"Content-Type": content_type})


def _batch_text(data: str) -> bytes:
    return json.dumps([cloudevent("n1", data="DATA")]).replace('"DATA"', data).encode()


@pytest.mark.parametrize(
    "data",
    [
        '{"v": Infinity}',
        '{"v": -Infinity}',
        '{"v": NaN}',
        '{"v": 1e400}',
        '{"v": 1' + "0" * 320 + "}",
    ],
)
def test_numbers_go_refuses_are_a_400_and_nothing_is_recorded(sink, data: str) -> None:
    # Given a batch holding a number Go's encoding/json refuses (Python's json reads it)
    state, client = sink
    body = _batch_text(data)
    json.loads(body)  # Python's own parser takes it: the stand-in must not
    # When / Then
    response = _post(client, body)
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith("invalid event:")
    assert state.events() == []


def test_the_text_meterbridge_used_to_send_for_1e400_is_refused_by_the_flush_client(sink) -> None:
    # Given what the outbox held for {"v": 1e400} before ingest refused it ("v":Infinity)
    state, client = sink
    event = json.dumps(cloudevent("inf-1", data={"v": float("inf")}))
    assert "Infinity" in event
    # When the flush's client sends it, then OpenMeter's answer is a rejection (dead letter)
    with pytest.raises(OpenMeterRejected) as caught:
        fast_client(str(client.base_url)).send_batch([event])
    assert caught.value.http_status == 400 and state.events() == []


def test_invalid_utf8_is_a_400(sink) -> None:
    state, client = sink
    body = json.dumps([cloudevent("u1", data={"s": "PLACEHOLDER"})]).encode()
    response = _post(client, body.replace(b"PLACEHOLDER", b"\xff\xfe"))
    assert response.status_code == 400 and state.events() == []


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("application/json", [cloudevent("j1"), cloudevent("j2")], 204),
        ("application/json", cloudevent("j3"), 204),
        ("application/json", [], 400),
        (SINGLE, cloudevent("s1"), 204),
        (SINGLE, [cloudevent("s2")], 400),
        (BATCH, [cloudevent("b1")], 204),
        (BATCH, cloudevent("b2"), 400),
        (BATCH + "; charset=utf-8", [cloudevent("b3")], 400),
        ("Application/CloudEvents-Batch+JSON", [cloudevent("b4")], 400),
        ("text/plain", [cloudevent("t1")], 400),
    ],
)
def test_content_types_are_matched_exactly_as_openmeter_does(
    sink, content_type: str, body: Any, status: int
) -> None:
    # Given a body in one content type / When posted / Then OpenMeter's status, never 415
    state, client = sink
    response = _post(client, json.dumps(body).encode(), content_type)
    assert response.status_code == status, response.text
    if status == 204:
        sent = body if isinstance(body, list) else [body]
        assert [e["id"] for e in state.events()] == [e["id"] for e in sent]
    else:
        assert response.headers["content-type"].startswith("application/problem+json")
        assert state.events() == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"data": [1, 2]}, "data must be a JSON object"),
        ({"data": "text"}, "data must be a JSON object"),
        ({"datacontenttype": "text/plain"}, "datacontenttype"),
        ({"dataschema": "not a uri"}, "dataschema"),
        ({"time": "2025-01-01"}, "time"),
        ({"specversion": "0.3"}, "specversion"),
    ],
)
def test_event_attributes_are_checked_against_openmeters_schema(
    sink, extra: dict[str, Any], message: str
) -> None:
    state, client = sink
    response = _post(client, json.dumps([cloudevent("ok"), cloudevent("bad", **extra)]).encode())
    assert response.status_code == 400, response.text
    problem = response.json()
    assert problem["errors"][0]["index"] == 1
    assert any(message in m for m in problem["errors"][0]["errors"])
    assert state.events() == []


def test_null_optional_attributes_and_dataschema_are_accepted(sink) -> None:
    state, client = sink
    event = cloudevent(
        "opt",
        data=None,
        datacontenttype=None,
        time=None,
        dataschema="https://schemas.example.com/v1.json",
    )
    assert _post(client, json.dumps([event]).encode()).status_code == 204
    assert state.events()[0]["dataschema"] == "https://schemas.example.com/v1.json"
