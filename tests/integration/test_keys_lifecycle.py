"""API keys through the admin API: issue, list, revoke (401 on next use), rotate with a grace
period, and no secret anywhere after creation (every DynamoDB item, log line and response)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient

from meterbridge.errors import Unauthorized
from meterbridge.logic.auth import authenticate
from meterbridge.settings import get_settings
from tests.support import tenants as helpers
from tests.support.tenants import AUTH, FakeStripe, body, idem, scan_all

# Fixtures shared with the other tenant tests (pytest finds them by these names).
admin = helpers.admin
fake_stripe = helpers.fake_stripe


def create_tenant(admin: TestClient, plan: str = "basic") -> tuple[str, dict[str, Any]]:
    resp = admin.post("/admin/tenants", json=body(plan=plan), headers=idem())
    assert resp.status_code == 201, resp.text
    return resp.json()["tenant"]["tenant_id"], resp.json()["api_key"]


def test_issue_and_list_keys_never_shows_a_secret_in_the_list(admin: TestClient) -> None:
    # Given a tenant with its first key
    tenant_id, first = create_tenant(admin)

    # When another key is issued and the keys are listed
    issued = admin.post(f"/admin/tenants/{tenant_id}/keys", headers=AUTH)
    listed = admin.get(f"/admin/tenants/{tenant_id}/keys", headers=AUTH)

    # Then the new key's secret is in the issue response only, and both keys are listed
    assert issued.status_code == 201
    assert issued.json()["secret"].startswith("mb_test_")
    assert listed.status_code == 200
    rows = listed.json()
    assert {r["key_id"] for r in rows} == {first["key_id"], issued.json()["key_id"]}
    for row in rows:
        assert set(row) == {
            "key_id",
            "tenant_id",
            "prefix",
            "status",
            "created_at",
            "last_used_at",
            "expires_at",
        }
        assert row["status"] == "active" and len(row["prefix"]) == 12
    assert authenticate(issued.json()["secret"]).tenant_id == tenant_id


def test_revoked_key_gets_401_on_its_next_use(admin: TestClient) -> None:
    # Given a tenant whose key has just authenticated (and is cached)
    tenant_id, key = create_tenant(admin)
    assert authenticate(key["secret"]).tenant_id == tenant_id

    # When the operator revokes it
    resp = admin.post(f"/admin/tenants/{tenant_id}/keys/{key['key_id']}/revoke", headers=AUTH)

    # Then the next use is refused, and revoking again answers the same
    assert resp.status_code == 200 and resp.json()["status"] == "revoked"
    with pytest.raises(Unauthorized):
        authenticate(key["secret"])
    again = admin.post(f"/admin/tenants/{tenant_id}/keys/{key['key_id']}/revoke", headers=AUTH)
    assert again.status_code == 200 and again.json()["status"] == "revoked"


def test_a_key_cannot_be_revoked_through_another_tenant(admin: TestClient) -> None:
    # Given two tenants
    tenant_a, key_a = create_tenant(admin)
    tenant_b, _ = create_tenant(admin)

    # When tenant B's path is used to revoke tenant A's key
    resp = admin.post(f"/admin/tenants/{tenant_b}/keys/{key_a['key_id']}/revoke", headers=AUTH)

    # Then 404 and A's key still works
    assert resp.status_code == 404
    assert authenticate(key_a["secret"]).tenant_id == tenant_a


def test_rotation_keeps_the_old_key_for_the_grace_period(admin: TestClient) -> None:
    # Given a tenant and its key
    tenant_id, old = create_tenant(admin)

    # When the key is rotated with an hour of grace
    resp = admin.post(
        f"/admin/tenants/{tenant_id}/keys/{old['key_id']}/rotate",
        json={"grace_seconds": 3600},
        headers=AUTH,
    )

    # Then both keys work for now, and the old one carries its expiry
    assert resp.status_code == 201, resp.text
    new = resp.json()["new_key"]
    assert resp.json()["old_key"]["expires_at"] is not None
    assert "secret" not in resp.json()["old_key"]
    assert authenticate(new["secret"]).tenant_id == tenant_id
    assert authenticate(old["secret"]).tenant_id == tenant_id


def test_rotation_with_no_grace_ends_the_old_key_at_once(admin: TestClient) -> None:
    # Given a tenant and its key
    tenant_id, old = create_tenant(admin)

    # When the key is rotated with zero grace
    resp = admin.post(
        f"/admin/tenants/{tenant_id}/keys/{old['key_id']}/rotate",
        json={"grace_seconds": 0},
        headers=AUTH,
    )

    # Then the old key is refused and the new one works
    assert resp.status_code == 201
    with pytest.raises(Unauthorized):
        authenticate(old["secret"])
    assert authenticate(resp.json()["new_key"]["secret"]).tenant_id == tenant_id


def test_rotation_refuses_bad_grace_and_revoked_keys(admin: TestClient) -> None:
    # Given a tenant with a revoked key
    tenant_id, key = create_tenant(admin)
    path = f"/admin/tenants/{tenant_id}/keys/{key['key_id']}"

    # When rotating with an oversized grace, and rotating after revocation
    too_long = admin.post(f"{path}/rotate", json={"grace_seconds": 10**9}, headers=AUTH)
    admin.post(f"{path}/revoke", headers=AUTH)
    revoked = admin.post(f"{path}/rotate", json={}, headers=AUTH)

    # Then a 400 and a 409
    assert too_long.status_code == 400
    assert revoked.status_code == 409


def _formatted_logs(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured record as the Powertools JSON line it was written as."""
    from meterbridge.observability import logger

    formatter = logger.registered_formatter
    lines = [formatter.format(r) for r in caplog.records]
    lines.extend(json.dumps(r.__dict__, default=str) for r in caplog.records)
    return "\n".join(lines)


def test_no_secret_in_any_item_log_line_or_later_response(
    admin: TestClient, fake_stripe: FakeStripe, caplog: pytest.LogCaptureFixture
) -> None:
    # Given every log line captured at DEBUG
    caplog.set_level(logging.DEBUG)
    headers = idem()

    # When a tenant is provisioned, keys issued, rotated, listed, revoked, replayed, offboarded
    created = admin.post("/admin/tenants", json=body(), headers=headers)
    tenant_id = created.json()["tenant"]["tenant_id"]
    first = created.json()["api_key"]
    issued = admin.post(f"/admin/tenants/{tenant_id}/keys", headers=AUTH).json()
    rotated = admin.post(
        f"/admin/tenants/{tenant_id}/keys/{issued['key_id']}/rotate", json={}, headers=AUTH
    ).json()
    secrets = [first["secret"], issued["secret"], rotated["new_key"]["secret"]]
    for secret in secrets:
        authenticate(secret)
    later = [
        admin.post("/admin/tenants", json=body(), headers=headers),
        admin.get(f"/admin/tenants/{tenant_id}", headers=AUTH),
        admin.get("/admin/tenants", headers=AUTH),
        admin.get(f"/admin/tenants/{tenant_id}/keys", headers=AUTH),
        admin.post(f"/admin/tenants/{tenant_id}/keys/{first['key_id']}/revoke", headers=AUTH),
        admin.patch(f"/admin/tenants/{tenant_id}", json={"plan": "pro"}, headers=AUTH),
        admin.post(f"/admin/tenants/{tenant_id}/suspend", headers=AUTH),
        admin.post(f"/admin/tenants/{tenant_id}/resume", headers=AUTH),
        admin.delete(f"/admin/tenants/{tenant_id}", headers=AUTH),
        admin.get(f"/admin/tenants/{tenant_id}/keys", headers=AUTH),
    ]

    # Then no DynamoDB item of any table, no log line and no later response holds a secret
    settings = get_settings()
    tables = [
        settings.tenants_table,
        settings.events_table,
        settings.usage_table,
        settings.idempotency_table,
    ]
    dump = json.dumps([scan_all(t) for t in tables])
    logs = _formatted_logs(caplog)
    responses = "\n".join(r.text for r in later)
    assert all(r.status_code < 300 for r in later), [r.text for r in later]
    assert "tenant provisioned" in logs  # the scan saw the lifecycle's log lines
    assert '"KEY#' in dump and "key_hash" in dump  # and the key records themselves
    for secret in secrets:
        body_part = secret[12:]  # everything past the shown prefix
        assert body_part not in dump
        assert body_part not in logs
        assert body_part not in responses
