"""Invariant 5 across a whole flow: no API key, webhook secret, Stripe key, OpenMeter key or
key pepper appears in any log line or metric output.

The flow: provision a tenant through the admin API (fake Stripe), issue a second key, send
usage with the key, deliver a signed Stripe webhook and a forged one, flush the outbox to the
OpenMeter fake. Captured: every record of meterbridge's Powertools logger (at DEBUG) and of the
root logger (at INFO, as deployed), formatted as JSON, plus everything written to stdout and
stderr (EMF metrics, uvicorn and library output).

While ingest (issue 4) is not available, ``POST /v1/events`` answers 501 and the key is used
through ``logic.auth.authenticate`` (what ingest calls first) instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from meterbridge.adapters.openmeter import reset_client
from meterbridge.logic import auth
from meterbridge.logic.flush import flush_outbox
from meterbridge.observability import logger as mb_logger
from meterbridge_dev.fakes.openmeter_sink import SinkState
from meterbridge_dev.fakes.openmeter_sink import create_app as create_sink
from meterbridge_dev.stack.servers import BackgroundServer
from tests.support import tenants as helpers
from tests.support.fixtures import reset_singletons
from tests.support.tenants import ADMIN_TOKEN, FakeStripe, body, idem
from tests.support.webhooks import NEW_SECRET, deliver, stripe_event

admin = helpers.admin
fake_stripe = helpers.fake_stripe

OPENMETER_KEY = "om_secret_key_for_log_test_0123456789"
PEPPER = "pepper-secret-for-log-test-0123456789"


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def captured_logs() -> Iterator[_Collect]:
    handler = _Collect()
    handler.setFormatter(mb_logger.registered_formatter)
    ours = logging.getLogger(mb_logger.name)
    root = logging.getLogger()
    old_ours, old_root = ours.level, root.level
    ours.addHandler(handler)
    root.addHandler(handler)
    ours.setLevel(logging.DEBUG)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        ours.removeHandler(handler)
        root.removeHandler(handler)
        ours.setLevel(old_ours)
        root.setLevel(old_root)


@pytest.fixture
def openmeter(monkeypatch: pytest.MonkeyPatch) -> Iterator[SinkState]:
    state = SinkState(OPENMETER_KEY)
    with BackgroundServer(create_sink(state)) as server:
        monkeypatch.setenv("OPENMETER_ENABLED", "true")
        monkeypatch.setenv("OPENMETER_BASE_URL", server.url)
        monkeypatch.setenv("OPENMETER_API_KEY", OPENMETER_KEY)
        reset_singletons()
        reset_client()
        yield state
    reset_client()


def test_no_secret_in_logs_across_provision_ingest_webhook_and_flush(
    monkeypatch: pytest.MonkeyPatch,
    admin: TestClient,
    fake_stripe: FakeStripe,
    openmeter: SinkState,
    captured_logs: _Collect,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # Given every secret configured, and logs captured at DEBUG
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", NEW_SECRET)
    monkeypatch.setenv("METERBRIDGE_KEY_PEPPER", PEPPER)
    reset_singletons()
    auth.forget()
    mb_logger.setLevel("DEBUG")

    # When a tenant is provisioned and given a second key
    created = admin.post("/admin/tenants", json=body(plan="basic"), headers=idem())
    assert created.status_code == 201, created.text
    tenant = created.json()["tenant"]
    tenant_id, first_key = tenant["tenant_id"], created.json()["api_key"]["secret"]
    issued = admin.post(f"/admin/tenants/{tenant_id}/keys", headers=idem())
    assert issued.status_code == 201, issued.text
    second_key = issued.json()["secret"]
    # And the tenant sends usage (and someone tries a wrong key)
    from meterbridge.api.usage import create_app as usage_app

    with TestClient(usage_app()) as usage:
        sent = usage.post(
            "/v1/events",
            json=[{"id": "e-1", "type": "api.call", "data": {"n": 1}}],
            headers={"Authorization": f"Bearer {first_key}"},
        )
        assert sent.status_code in (202, 501), sent.text
        wrong = usage.post(
            "/v1/events",
            json=[{"id": "e-2", "type": "api.call", "data": {}}],
            headers={"Authorization": f"Bearer {first_key[:-4]}zzzz"},
        )
        assert wrong.status_code in (401, 501), wrong.text
    assert auth.authenticate(second_key).tenant_id == tenant_id
    # And Stripe delivers a signed event, and a forger an unsigned one
    event = stripe_event("invoice.paid", customer=tenant["stripe_customer_id"], tenant_id=tenant_id)
    assert deliver(event)[0] == 200
    assert deliver(event, secret="whsec_forged_0000")[0] == 400
    # And the flush delivers the outbox to OpenMeter
    result = flush_outbox(remaining_ms=lambda: 60_000)
    assert result.sent >= 2 and result.stopped is None

    # Then no secret appears anywhere in the logs or the process output
    out, err = capfd.readouterr()
    text = "\n".join(captured_logs.lines) + out + err
    # (the capture works: the forged delivery and the flush were logged)
    assert "stripe webhook rejected" in text and "flush finished" in text and tenant_id in text
    secrets = {
        "first API key": first_key,
        "second API key": second_key,
        "Stripe webhook secret": NEW_SECRET,
        "Stripe API key": "sk_test_meterbridge",
        "OpenMeter API key": OPENMETER_KEY,
        "key pepper": PEPPER,
        "admin token": ADMIN_TOKEN,
    }
    leaked = [name for name, secret in secrets.items() if secret in text]
    assert not leaked, f"secrets in logs: {leaked}"
    # And the key's random part never appears either (a prefix is allowed: it is shown in lists)
    assert first_key[12:] not in text and second_key[12:] not in text
