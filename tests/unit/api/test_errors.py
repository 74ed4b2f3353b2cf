from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from meterbridge.api.errors import install_error_handlers
from meterbridge.errors import QuotaExceeded, TenantSuspended, to_http


class Body(BaseModel):
    n: int


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/quota")
    async def quota() -> None:
        raise QuotaExceeded(
            "monthly quota reached", details={"meter": "events"}, headers={"Retry-After": "60"}
        )

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals sk_live_abc")

    @app.post("/body")
    async def body(b: Body) -> dict[str, int]:
        return {"n": b.n}

    return app


def test_domain_error_maps_to_status_body_and_headers() -> None:
    # Given a route raising a domain error
    client = TestClient(_app())
    # When it is called
    resp = client.get("/quota")
    # Then the status, the JSON error body and Retry-After come from the one mapping
    assert resp.status_code == 429
    assert resp.headers["retry-after"] == "60"
    assert resp.json() == {
        "error": {
            "code": "quota_exceeded",
            "message": "monthly quota reached",
            "details": {"meter": "events"},
        }
    }


def test_framework_validation_error_is_a_400_with_details() -> None:
    # Given a body of the wrong type
    client = TestClient(_app())
    # When posted
    resp = client.post("/body", json={"n": "not-a-number"})
    # Then a 400 invalid_request with the failing location
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert err["code"] == "invalid_request"
    assert err["details"][0]["loc"] == ["body", "n"]


def test_unknown_route_and_unexpected_error_use_the_error_body() -> None:
    # Given the app
    client = TestClient(_app(), raise_server_exceptions=False)
    # When an unknown route and a crashing route are called
    missing = client.get("/nope")
    crash = client.get("/boom")
    # Then both answer the JSON error body, and internals are not leaked
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert crash.status_code == 500 and crash.json()["error"]["code"] == "internal_error"
    assert "sk_live_abc" not in crash.text


def test_to_http_for_suspended_tenant() -> None:
    # Given / When
    status, body, headers = to_http(TenantSuspended("suspended"))
    # Then
    assert status == 403 and body["error"]["code"] == "tenant_suspended" and headers == {}
