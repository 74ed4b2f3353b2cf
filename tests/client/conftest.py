"""The local stack for the client library's tests, over HTTP on loopback.

- ``stack``: the usage API (``meterbridge.api.usage``) under uvicorn on moto tables, behind a
  ``FaultGate`` (a test-only ASGI wrapper that can answer 503 for a while, and counts the
  requests that reached it), the OpenMeter stand-in the flush delivers to, and one Pro tenant.
  ``stack.flush_all()`` runs the flush until the outbox is empty.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from meterbridge_dev.fakes.openmeter_sink import SinkState
from meterbridge_dev.fakes.openmeter_sink import create_app as create_sink
from meterbridge_dev.stack.servers import BackgroundServer
from tests.support.builders import make_tenant
from tests.support.fixtures import reset_singletons

OPENMETER_KEY = "om_client_tests"


class FaultGate:
    """ASGI wrapper: while ``unavailable_until`` is in the future every ``/v1/events`` request
    gets 503 (with ``Retry-After: 1``) before reaching the app; counts what it saw."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.unavailable_until = 0.0
        self.reject_after: int | None = None  # 503 for every request past this many
        self.passed = 0
        self.refused = 0

    def unavailable_for(self, seconds: float) -> None:
        self.unavailable_until = time.monotonic() + seconds

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/events":
            limited = self.reject_after is not None and self.passed >= self.reject_after
            if time.monotonic() < self.unavailable_until or limited:
                self.refused += 1
                await send(
                    {
                        "type": "http.response.start",
                        "status": 503,
                        "headers": [(b"content-type", b"application/json"), (b"retry-after", b"1")],
                    }
                )
                body = b'{"error":{"code":"unavailable","message":"injected by the test"}}'
                await send({"type": "http.response.body", "body": body})
                return
            self.passed += 1
        await self.app(scope, receive, send)


@dataclass
class Stack:
    url: str
    key: str
    tenant_id: str
    gate: FaultGate
    sink: SinkState
    events_table: str

    def usage(self, meter: str = "api_calls") -> int:
        resp = httpx.get(
            f"{self.url}/v1/usage", headers={"Authorization": f"Bearer {self.key}"}, timeout=30
        )
        assert resp.status_code == 200, resp.text
        meters = {m["meter"]: m["used"] for m in resp.json()["current"]["meters"]}
        return int(meters[meter])

    def stored_ids(self) -> list[str]:
        """The ids of the event records in the events table (one per stored event)."""
        return [json.loads(r["event"])["id"] for r in self.event_records()]

    def event_records(self) -> list[dict[str, Any]]:
        """The events table's event records, by a consistent scan with a patient client:
        moto pages through 20,000 items slowly on a busy machine, past the product's 5 s
        read timeout."""
        import boto3
        from botocore.config import Config

        from meterbridge.dal import dynamo, outbox

        patient = boto3.client(
            "dynamodb", config=Config(read_timeout=300, retries={"mode": "standard"})
        )
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": self.events_table, "ConsistentRead": True}
        while True:
            resp = patient.scan(**kwargs)
            items += [dynamo.deserialize(i) for i in resp.get("Items", [])]
            if "LastEvaluatedKey" not in resp:
                return [i for i in items if i["sk"] == outbox.EVENT_SK]
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def openmeter_ids(self) -> Counter[str]:
        """How many times OpenMeter received each of this tenant's event ids."""
        source = f"//meterbridge/tenants/{self.tenant_id}"
        return Counter({eid: n for (src, eid), n in self.sink.counts().items() if src == source})

    def flush_all(self) -> None:
        from meterbridge.logic.flush import flush_outbox

        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            try:
                result = flush_outbox(lambda: 60_000)
            except Exception as exc:  # a moto timeout on a busy machine: the next run resumes
                logging.getLogger(__name__).warning("flush failed, again: %r", exc)
                continue
            if result.sent == 0 and result.remaining == 0 and result.retried == 0:
                return
        raise AssertionError("the outbox did not drain")


@pytest.fixture
def stack(aws: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    from meterbridge.adapters.openmeter import reset_client
    from meterbridge.api.usage import create_app
    from meterbridge.settings import get_settings

    sink_state = SinkState(OPENMETER_KEY)
    with BackgroundServer(create_sink(sink_state)) as sink:
        monkeypatch.setenv("OPENMETER_ENABLED", "true")
        monkeypatch.setenv("OPENMETER_BASE_URL", sink.url)
        monkeypatch.setenv("OPENMETER_API_KEY", OPENMETER_KEY)
        reset_singletons()
        reset_client()
        tenant_id, key = make_tenant(plan="pro")
        gate = FaultGate(create_app())
        with BackgroundServer(gate, graceful_timeout=2.0) as api:
            yield Stack(api.url, key, tenant_id, gate, sink_state, get_settings().events_table)
    reset_client()
