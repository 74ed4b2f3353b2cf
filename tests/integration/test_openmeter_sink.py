"""The OpenMeter-compatible sink, over real HTTP (uvicorn on loopback, httpx as the client)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from meterbridge_dev.fakes.openmeter_sink import Fault, SinkState, create_app
from meterbridge_dev.stack.servers import BackgroundServer
from tests.support.openmeter import BATCH, SINGLE, cloudevent

API_KEY = "om_test_key"
SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture
def sink() -> Iterator[tuple[SinkState, httpx.Client]]:
    state = SinkState(API_KEY, seed=7, retry_after=2)
    with (
        BackgroundServer(create_app(state)) as server,
        httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"}) as client,
    ):
        yield state, client


def post_batch(client: httpx.Client, events: list[dict[str, Any]], **kw: Any) -> httpx.Response:
    return client.post("/api/v1/events", json=events, headers={"Content-Type": BATCH}, **kw)


def test_batch_is_accepted_with_204_and_recorded_in_order(sink):
    # Given
    state, client = sink
    events = [cloudevent("e1"), cloudevent("e2"), cloudevent("e3")]

    # When
    response = post_batch(client, events)

    # Then
    assert response.status_code == 204
    assert response.content == b""
    assert [e["id"] for e in state.events()] == ["e1", "e2", "e3"]
    assert state.count("//meterbridge/tenants/t1", "e2") == 1
    assert client.get("/_control/events").json()["count"] == 3


def test_single_event_content_type_is_accepted(sink):
    # Given
    state, client = sink

    # When
    response = client.post(
        "/api/v1/events", json=cloudevent("one"), headers={"Content-Type": SINGLE}
    )

    # Then
    assert response.status_code == 204
    assert [e["id"] for e in state.events()] == ["one"]


def test_resent_batch_is_recorded_again_and_counted_per_source_and_id(sink):
    # Given
    state, client = sink
    batch = [cloudevent("a"), cloudevent("b")]
    assert post_batch(client, batch).status_code == 204

    # When
    response = post_batch(client, batch)

    # Then
    assert response.status_code == 204
    assert state.unique_keys() == {
        ("//meterbridge/tenants/t1", "a"),
        ("//meterbridge/tenants/t1", "b"),
    }
    assert state.resent() == {
        ("//meterbridge/tenants/t1", "a"): 2,
        ("//meterbridge/tenants/t1", "b"): 2,
    }
    stats = client.get("/_control/stats").json()
    assert stats["events_recorded"] == 4 and stats["unique_events"] == 2


def test_wrong_content_type_is_400_as_openmeter_answers_and_records_nothing(sink):
    # Given (OpenMeter's ingest handler answers 400 "invalid content type"; its spec has no 415)
    state, client = sink

    # When
    response = client.post(
        "/api/v1/events", json=[cloudevent("x")], headers={"Content-Type": "text/plain"}
    )

    # Then
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["detail"] == "invalid content type: text/plain"
    assert state.events() == []


def test_missing_or_wrong_bearer_token_is_401(sink):
    # Given
    state, client = sink

    # When
    response = httpx.post(
        f"{client.base_url}/api/v1/events",
        json=[cloudevent("x")],
        headers={"Content-Type": BATCH, "Authorization": "Bearer wrong"},
    )

    # Then
    assert response.status_code == 401
    assert state.events() == []


def test_event_without_subject_rejects_the_whole_batch_with_problem_json(sink):
    # Given
    state, client = sink
    bad = cloudevent("bad")
    del bad["subject"]

    # When
    response = post_batch(client, [cloudevent("good"), bad])

    # Then
    assert response.status_code == 400
    problem = response.json()
    assert problem["status"] == 400
    assert problem["errors"][0]["index"] == 1
    assert any("subject" in message for message in problem["errors"][0]["errors"])
    assert state.events() == []


def test_scripted_429_carries_retry_after_then_next_request_succeeds(sink):
    # Given
    state, client = sink
    state.script(Fault("throttle", retry_after=3))

    # When
    throttled = post_batch(client, [cloudevent("t1")])
    retried = post_batch(client, [cloudevent("t1")])

    # Then
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "3"
    assert retried.status_code == 204
    assert state.count("//meterbridge/tenants/t1", "t1") == 1


def test_faults_scripted_over_the_control_endpoint(sink):
    # Given
    state, client = sink
    configured = client.post(
        "/_control/faults", json={"script": ["unavailable", {"kind": "error"}], "retry_after": 5}
    )
    assert configured.status_code == 200
    assert [f["kind"] for f in configured.json()["script"]] == ["unavailable", "error"]

    # When
    statuses = [post_batch(client, [cloudevent(f"c{i}")]) for i in range(3)]

    # Then
    assert [r.status_code for r in statuses] == [503, 500, 204]
    assert statuses[0].headers["Retry-After"] == "5"
    assert [e["id"] for e in state.events()] == ["c2"]


def test_poison_event_rejects_the_batch_and_records_nothing(sink):
    # Given
    state, client = sink
    client.post("/_control/faults", json={"poison": ["p2"]})

    # When
    response = post_batch(client, [cloudevent("p1"), cloudevent("p2"), cloudevent("p3")])

    # Then
    assert response.status_code == 400
    assert response.json()["errors"][0]["index"] == 1
    assert state.events() == []
    assert post_batch(client, [cloudevent("p1"), cloudevent("p3")]).status_code == 204
    assert [e["id"] for e in state.events()] == ["p1", "p3"]


def test_record_then_fail_stores_the_batch_but_answers_500(sink):
    # Given
    state, client = sink
    state.script("record_then_fail")

    # When
    response = post_batch(client, [cloudevent("r1")])

    # Then
    assert response.status_code == 500
    assert [e["id"] for e in state.events()] == ["r1"]


def test_hang_exceeds_client_timeout_without_blocking_other_requests(sink):
    # Given a hang far longer than the client waits (a margin no loaded machine eats up)
    state, client = sink
    state.script(Fault("hang", seconds=10, then="ok"))

    # When
    with pytest.raises(httpx.TimeoutException):
        post_batch(client, [cloudevent("slow")], timeout=1.0)
    health = client.get("/health", timeout=30)
    other = post_batch(client, [cloudevent("fast")], timeout=30)

    # Then the others are served while the first still hangs (it has not stored yet)
    assert health.status_code == 200 and other.status_code == 204
    assert [e["id"] for e in state.events()] == ["fast"]
    assert state.wait_for_events(2, timeout=60)
    assert {e["id"] for e in state.events()} == {"slow", "fast"}


def test_seeded_probabilities_are_deterministic():
    # Given
    def run() -> list[int]:
        state = SinkState(seed=42)
        state.set_probabilities(error=0.3, throttle=0.2)
        with (
            BackgroundServer(create_app(state)) as server,
            httpx.Client(base_url=server.url) as client,
        ):
            return [post_batch(client, [cloudevent(f"d{i}")]).status_code for i in range(30)]

    # When
    first, second = run(), run()

    # Then
    assert first == second
    assert {500, 429, 204} <= set(first)


def test_reset_forgets_events_and_faults(sink):
    # Given
    state, client = sink
    post_batch(client, [cloudevent("z")])
    state.script("error")

    # When
    client.post("/_control/reset")

    # Then
    assert state.events() == []
    assert client.get("/_control/stats").json()["requests"] == 0
    assert post_batch(client, [cloudevent("z2")]).status_code == 204


def test_runs_as_a_separate_process_and_prints_its_url():
    # Given
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SHARED), str(SHARED.parent / "dev")])}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "meterbridge_dev.fakes.openmeter_sink",
            "--port",
            "0",
            "--api-key",
            "k",
        ],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        # When
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        url = line.removeprefix("listening on ")
        response = httpx.post(
            f"{url}/api/v1/events",
            json=[cloudevent("proc")],
            headers={"Content-Type": BATCH, "Authorization": "Bearer k"},
        )

        # Then
        assert line.startswith("listening on http://127.0.0.1:")
        assert response.status_code == 204
        assert httpx.get(f"{url}/_control/events").json()["events"][0]["id"] == "proc"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0
