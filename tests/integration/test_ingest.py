"""POST /v1/events and GET /v1/usage against tables on a real moto server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from meterbridge.api.usage import create_app
from tests.support.builders import event_records, events_table_items, make_tenant, stream_queued


@pytest.fixture
def client(aws: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(create_app()) as c:
        yield c


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _events_in_table(table: str) -> list[dict]:
    return event_records(table)


def _event(i: int | str, **extra: object) -> dict:
    return {"id": f"evt-{i}", "type": "api.call", "data": {"n": 1}, **extra}


def test_single_event_is_accepted_stored_and_counted(client: TestClient, aws: dict) -> None:
    # Given a Basic tenant
    tenant, key = make_tenant("basic")
    # When one CloudEvent is posted
    resp = client.post("/v1/events", json=_event(1), headers=_auth(key))
    # Then it is accepted, in the outbox with the server's source, and counted
    assert resp.status_code == 202 and resp.json() == {"accepted": 1, "duplicates": 0}
    [item] = [i for i in _events_in_table(aws["EventsTable"])]
    stored = json.loads(item["event"])
    assert stored["source"] == f"//meterbridge/tenants/{tenant}" and stored["subject"] == tenant
    # And queued for OpenMeter: the record's one INSERT in the table's stream carries it, and
    # nothing else was written for the outbox (no segment, no marker, no index entry)
    [queued] = stream_queued(aws["EventsTable"])
    assert (queued.pk, queued.event) == (item["pk"], item["event"])
    assert events_table_items(aws["EventsTable"])[1] == []
    assert not {"segment", "outbox_shard", "republish_shard", "dead"} & set(item)
    usage = client.get("/v1/usage", headers=_auth(key)).json()
    api_calls = {m["meter"]: m for m in usage["current"]["meters"]}["api_calls"]
    assert api_calls["used"] == 1 and api_calls["remaining"] == 99_999


def test_batch_with_repeats_and_a_retry_is_counted_once(client: TestClient, aws: dict) -> None:
    # Given a batch with the same id twice
    _, key = make_tenant("basic")
    batch = [_event(1), _event(2), _event(1)]
    # When it is posted, then retried whole
    first = client.post(
        "/v1/events",
        json=batch,
        headers=_auth(key),
    )
    retry = client.post("/v1/events", json=batch, headers=_auth(key))
    # Then each id is stored and counted once
    assert first.json() == {"accepted": 2, "duplicates": 1}
    assert retry.json() == {"accepted": 0, "duplicates": 3}
    assert len(_events_in_table(aws["EventsTable"])) == 2
    meters = {
        m["meter"]: m
        for m in client.get("/v1/usage", headers=_auth(key)).json()["current"]["meters"]
    }
    assert meters["api_calls"]["used"] == 2


def test_a_large_batch_is_queued_once_each_within_the_request_limit(
    client: TestClient, aws: dict
) -> None:
    # Given a Pro tenant and a batch of 1,000 events of about 900 bytes each (~0.9 MB)
    _, key = make_tenant("pro")
    batch = [_event(i, data={"blob": "x" * 850}) for i in range(1000)]
    # When it is posted
    resp = client.post("/v1/events", json=batch, headers=_auth(key))
    # Then every event has one record and the stream queued each exactly once (in chunks that
    # keep each transaction inside DynamoDB's 4 MB request limit); no segment was written
    assert resp.status_code == 202 and resp.json()["accepted"] == 1000
    records, segments = events_table_items(aws["EventsTable"])
    queued = [json.loads(q.event)["id"] for q in stream_queued(aws["EventsTable"])]
    assert (
        sorted(queued)
        == sorted(e["id"] for e in batch)
        == sorted(json.loads(r["event"])["id"] for r in records)
    )
    assert segments == []


def test_tenant_comes_from_the_key_not_the_body(client: TestClient, aws: dict) -> None:
    # Given two tenants, and A's key with a body naming B everywhere it can
    tenant_a, key_a = make_tenant("basic")
    tenant_b, _ = make_tenant("basic")
    body = _event(1, source=f"//meterbridge/tenants/{tenant_b}", subject=tenant_b)
    # When A posts it
    resp = client.post("/v1/events", json=body, headers=_auth(key_a))
    # Then the event is A's: A's source and subject; B's name only as A's own subject in data
    assert resp.status_code == 202
    [item] = _events_in_table(aws["EventsTable"])
    stored = json.loads(item["event"])
    assert item["tenant_id"] == tenant_a
    assert stored["source"] == f"//meterbridge/tenants/{tenant_a}"
    assert stored["subject"] == tenant_a
    assert stored["data"]["meterbridge_subject"] == tenant_b


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "invalid_request"),
        (json.dumps(_event(1)).encode(), "text/plain", 415, "unsupported_media_type"),
        (json.dumps({"type": "x"}).encode(), "application/json", 400, "invalid_request"),
        (json.dumps(_event("x" * 129)).encode(), "application/json", 400, "invalid_request"),
        (
            json.dumps([_event(1), {"id": "2"}]).encode(),
            "application/cloudevents-batch+json",
            400,
            "invalid_request",
        ),
        (
            json.dumps([_event(i) for i in range(1001)]).encode(),
            "application/json",
            413,
            "payload_too_large",
        ),
        (
            json.dumps(_event(1, data={"x": "y" * 70_000})).encode(),
            "application/json",
            413,
            "payload_too_large",
        ),
        (
            json.dumps(_event(1, time="__36_DAYS_AGO__")).encode(),
            "application/json",
            400,
            "invalid_request",
        ),
        (
            json.dumps(_event(1, time="__10_MINUTES_AHEAD__")).encode(),
            "application/json",
            400,
            "invalid_request",
        ),
        (
            json.dumps(_event(1, unknown_field=1)).encode(),
            "application/json",
            400,
            "invalid_request",
        ),
        (json.dumps([]).encode(), "application/json", 400, "invalid_request"),
    ],
    ids=[
        "bad-json",
        "content-type",
        "missing-id",
        "long-id",
        "one-bad-in-batch",
        "too-many",
        "event-too-large",
        "too-old",
        "future",
        "unknown-field",
        "empty-batch",
    ],
)
def test_invalid_requests_get_their_error_and_store_nothing(
    client: TestClient, aws: dict, body: bytes, content_type: str, status: int, code: str
) -> None:
    # Given a tenant (and times taken now, not when the cases were collected)
    _, key = make_tenant("basic")
    now = datetime.now(UTC)
    body = body.replace(b"__36_DAYS_AGO__", (now - timedelta(days=36)).isoformat().encode())
    body = body.replace(b"__10_MINUTES_AHEAD__", (now + timedelta(minutes=10)).isoformat().encode())
    # When an invalid request is sent
    resp = client.post(
        "/v1/events", content=body, headers={**_auth(key), "content-type": content_type}
    )
    # Then the status and code are clear and nothing is stored
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["code"] == code
    assert _events_in_table(aws["EventsTable"]) == []


def test_batch_error_details_name_each_bad_index(client: TestClient, aws: dict) -> None:
    # Given a batch whose events 1 and 3 are bad
    _, key = make_tenant("basic")
    batch = [_event(0), {"id": "a"}, _event(2), _event(3, time="yesterday")]
    # When posted
    resp = client.post("/v1/events", json=batch, headers=_auth(key))
    # Then the details list exactly those indexes
    assert resp.status_code == 400
    assert [d["index"] for d in resp.json()["error"]["details"]] == [1, 3]


def test_body_over_one_megabyte_is_refused(client: TestClient, aws: dict) -> None:
    # Given a body over 1 MB
    _, key = make_tenant("basic")
    batch = [_event(i, data={"pad": "x" * 1500}) for i in range(700)]
    # When posted / Then 413 and nothing stored
    resp = client.post("/v1/events", json=batch, headers=_auth(key))
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "payload_too_large"
    assert _events_in_table(aws["EventsTable"]) == []


@pytest.mark.parametrize(
    ("header", "status", "code"),
    [
        (None, 401, "unauthorized"),
        ("Bearer mb_test_nope", 401, "unauthorized"),
        ("Basic abc", 401, "unauthorized"),
    ],
)
def test_bad_keys_get_401_and_store_nothing(
    client: TestClient, aws: dict, header, status, code
) -> None:
    # Given no key, a malformed key, or another scheme
    headers = {"Authorization": header} if header else {}
    # When posting / Then 401 and nothing stored
    resp = client.post("/v1/events", json=_event(1), headers=headers)
    assert resp.status_code == status and resp.json()["error"]["code"] == code
    assert _events_in_table(aws["EventsTable"]) == []


def test_suspended_tenant_gets_403(client: TestClient, aws: dict) -> None:
    # Given a suspended tenant
    _, key = make_tenant("basic", status="suspended")
    # When it posts / Then 403 and nothing stored
    resp = client.post("/v1/events", json=_event(1), headers=_auth(key))
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "tenant_suspended"
    assert _events_in_table(aws["EventsTable"]) == []
