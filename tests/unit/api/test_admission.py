"""api/admission.py on the ASGI level: a tenant out of tokens is refused before its body is
read or the app runs; an admitted request carries its principal and token to the app."""

from __future__ import annotations

import json
from typing import Any

import pytest

from meterbridge.api import admission
from meterbridge.errors import Unauthorized
from meterbridge.logic import rate
from meterbridge.models.principal import TenantPrincipal
from meterbridge.plans import catalog

PRINCIPAL = TenantPrincipal(tenant_id="t_adm", key_id="k_adm", plan="free", status="active")


@pytest.fixture(autouse=True)
def _fresh_buckets() -> None:
    rate.reset()


def _scope(path: str = "/v1/events", key: str | None = "mb_test_key") -> dict[str, Any]:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"1000000")]
    if key is not None:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    return {"type": "http", "method": "POST", "path": path, "headers": headers}


class Recorder:
    """The inner app and the transport: what was called, sent and read."""

    def __init__(self) -> None:
        self.app_scopes: list[dict[str, Any]] = []
        self.reads = 0
        self.sent: list[dict[str, Any]] = []

    async def app(self, scope: Any, receive: Any, send: Any) -> None:
        self.app_scopes.append(scope)

    async def receive(self) -> dict[str, Any]:
        self.reads += 1
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(self, message: Any) -> None:
        self.sent.append(message)


async def test_a_tenant_out_of_tokens_is_refused_without_reading_the_body(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a cached key of a Free tenant that spent its bucket
    monkeypatch.setattr(admission, "cached", lambda key: PRINCIPAL)
    plan = catalog().plan("free")
    for _ in range(int(rate.MIN_BURST)):
        rate.take_local(PRINCIPAL.tenant_id, plan)
    rec = Recorder()

    # When it sends one more request (announcing a 1 MB body)
    await admission.TenantAdmission(rec.app)(_scope(), rec.receive, rec.send)

    # Then it gets 429 naming the limit, with Retry-After; no body byte read, the app not run
    assert rec.reads == 0 and rec.app_scopes == []
    start, body = rec.sent
    assert start["status"] == 429
    headers = dict(start["headers"])
    assert int(headers[b"retry-after"]) >= 1
    error = json.loads(body["body"])["error"]
    assert error["code"] == "rate_limited"
    assert error["message"] == f"more than {plan.requests_per_minute} requests per minute"


async def test_an_admitted_request_carries_its_principal_and_one_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a cached key with a full bucket
    monkeypatch.setattr(admission, "cached", lambda key: PRINCIPAL)
    rec = Recorder()

    # When it sends a request
    await admission.TenantAdmission(rec.app)(_scope(), rec.receive, rec.send)

    # Then the app runs with the principal in the scope's state, and one token is gone
    (scope,) = rec.app_scopes
    assert scope["state"][admission.STATE_PRINCIPAL] == PRINCIPAL
    assert scope["state"][admission.STATE_BURSTING] is False
    tokens, _ = rate._buckets[PRINCIPAL.tenant_id]
    assert tokens == rate.MIN_BURST - 1


@pytest.mark.parametrize(
    ("path", "key", "cached"),
    [
        ("/admin/tenants", "mb_test_key", PRINCIPAL),  # not a tenant route
        ("/v1/stream-tokens", "mb_test_key", PRINCIPAL),  # takes its own token
        ("/v1/events", None, PRINCIPAL),  # no key: the app answers 401
        ("/v1/events", "mb_test_key", None),  # not cached: the app authenticates
        ("/v1/events", "mb_test_key", Unauthorized("revoked")),  # a cached refusal
    ],
)
async def test_what_admission_cannot_answer_goes_to_the_app_untouched(
    monkeypatch: pytest.MonkeyPatch, path: str, key: str | None, cached: Any
) -> None:
    # Given a key whose cache answer is ``cached``
    def lookup(_: str) -> TenantPrincipal | None:
        if isinstance(cached, Exception):
            raise cached
        return cached

    monkeypatch.setattr(admission, "cached", lookup)
    rec = Recorder()

    # When the request comes in
    await admission.TenantAdmission(rec.app)(_scope(path, key), rec.receive, rec.send)

    # Then the app gets it with no token taken and nothing in its state
    (scope,) = rec.app_scopes
    assert admission.STATE_PRINCIPAL not in scope.get("state", {})
    assert rate._buckets == {}
