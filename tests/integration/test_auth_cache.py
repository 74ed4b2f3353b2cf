"""The key cache's bounds (moto over HTTP): a cached principal never outlives its key's
expiry, and refused keys are remembered so a flood of them costs no DynamoDB read."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from meterbridge.dal import keys as keys_dal
from meterbridge.errors import Unauthorized
from meterbridge.logic.auth import authenticate
from meterbridge.logic.keys import format as keys
from meterbridge.settings import get_settings
from tests.support import tenants as helpers
from tests.support.builders import make_tenant
from tests.support.dynamo import dynamodb_calls
from tests.support.fixtures import reset_singletons
from tests.support.tenants import AUTH

admin = helpers.admin


@pytest.fixture
def long_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """The longest key-cache TTL allowed (60 s): anything refused sooner is not the TTL."""
    monkeypatch.setenv("METERBRIDGE_KEY_CACHE_TTL_S", "60")
    reset_singletons()


def test_a_rotated_key_stops_at_its_grace_end_though_cached(
    long_cache: None, admin: TestClient
) -> None:
    # Given a key rotated with 2 s of grace, authenticated (so cached for 60 s) in its grace
    resp = admin.post("/admin/tenants", json=helpers.body(), headers=helpers.idem())
    tenant_id, old = resp.json()["tenant"]["tenant_id"], resp.json()["api_key"]
    rotated = admin.post(
        f"/admin/tenants/{tenant_id}/keys/{old['key_id']}/rotate",
        json={"grace_seconds": 2},
        headers=AUTH,
    )
    assert rotated.status_code == 201, rotated.text
    record = keys_dal.get_key_consistent(get_settings().tenants_table, old["key_id"])
    assert record is not None
    expires_at = float(record["expires_at_s"])
    assert authenticate(old["secret"]).tenant_id == tenant_id

    # When its grace has ended (well inside the cache TTL)
    while time.time() < expires_at:
        time.sleep(0.1)

    # Then the old key is refused at once, and the new one still works
    with pytest.raises(Unauthorized, match="expired"):
        authenticate(old["secret"])
    assert authenticate(rotated.json()["new_key"]["secret"]).tenant_id == tenant_id


def test_a_key_cached_before_rotation_is_dropped_by_the_rotating_process(
    long_cache: None, admin: TestClient
) -> None:
    # Given a cached key
    resp = admin.post("/admin/tenants", json=helpers.body(), headers=helpers.idem())
    tenant_id, old = resp.json()["tenant"]["tenant_id"], resp.json()["api_key"]
    assert authenticate(old["secret"]).tenant_id == tenant_id

    # When this process rotates it with no grace
    rotated = admin.post(
        f"/admin/tenants/{tenant_id}/keys/{old['key_id']}/rotate",
        json={"grace_seconds": 0},
        headers=AUTH,
    )

    # Then the cache entry is gone: refused now, not a TTL later
    assert rotated.status_code == 201
    with pytest.raises(Unauthorized):
        authenticate(old["secret"])


def _well_formed_unknown_key() -> str:
    raw, _ = keys.generate("test")
    assert keys.parse(raw) is not None
    return raw


def test_a_flood_of_one_unknown_key_costs_no_read_after_the_first(
    long_cache: None, aws: dict[str, str]
) -> None:
    # Given a well-formed key (valid checksum) that was never issued
    raw = _well_formed_unknown_key()

    # When it is tried 200 times
    with dynamodb_calls("GetItem") as reads:
        for _ in range(200):
            with pytest.raises(Unauthorized):
                authenticate(raw)

    # Then only the first attempt read DynamoDB (the miss, confirmed by a consistent read)
    assert len(reads) == 2
    assert reads[1]["ConsistentRead"] is True


def test_wrong_secrets_revoked_and_expired_keys_are_remembered_as_refused(
    long_cache: None, aws: dict[str, str]
) -> None:
    # Given a revoked key, an expired key and a forged secret for a real lookup id
    settings = get_settings()
    _, revoked = make_tenant()
    _, expired = make_tenant()
    lookup_revoked = keys.parse(revoked).lookup_id  # type: ignore[union-attr]
    lookup_expired = keys.parse(expired).lookup_id  # type: ignore[union-attr]
    keys_dal.update_key(settings.tenants_table, lookup_revoked, fields={"status": "revoked"})
    keys_dal.update_key(
        settings.tenants_table, lookup_expired, fields={"expires_at_s": int(time.time()) - 1}
    )
    head = revoked[: -keys.CHECKSUM_LEN - 1] + ("A" if revoked[-7] != "A" else "B")
    forged = head + keys.checksum(head)
    assert keys.parse(forged) is not None and forged != revoked

    # When each is tried 50 times
    with dynamodb_calls("GetItem") as reads:
        for raw in (revoked, expired, forged):
            for _ in range(50):
                with pytest.raises(Unauthorized):
                    authenticate(raw)

    # Then each cost one key read (and the expired one's tenant read never happened)
    assert len(reads) == 3
    assert all(r["Key"]["pk"]["S"].startswith("KEY#") for r in reads), reads


def test_a_refused_key_is_not_remembered_when_caching_is_off(
    monkeypatch: pytest.MonkeyPatch, aws: dict[str, str]
) -> None:
    # Given the key cache turned off
    monkeypatch.setenv("METERBRIDGE_KEY_CACHE_TTL_S", "0")
    reset_singletons()
    raw = _well_formed_unknown_key()

    # When an unknown key is tried 3 times
    with dynamodb_calls("GetItem") as reads:
        for _ in range(3):
            with pytest.raises(Unauthorized):
                authenticate(raw)

    # Then every attempt read DynamoDB (the TTL bounds refusals too)
    assert len(reads) == 6
