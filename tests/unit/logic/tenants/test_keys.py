"""Key issue, rotation grace and revocation, against the in-memory key repository."""

import time

import pytest

from meterbridge.errors import Conflict, NotFound
from meterbridge.logic.keys import lifecycle as keys
from tests.support.fakes.tenants import FakeStore


def test_rotation_keeps_the_old_key_working_for_the_grace_period(store: FakeStore) -> None:
    # Given an active tenant with a key
    tenant_id = store.add_tenant()
    old = keys.issue(tenant_id)

    # When the key is rotated with an hour of grace
    before = int(time.time())
    rotation = keys.rotate(tenant_id, old.key_id, 3600)
    after = int(time.time())

    # Then the new key is active and the old one is still active, expiring an hour from now
    assert rotation.new_key.status == "active" and rotation.new_key.key_id != old.key_id
    assert rotation.old_key.status == "active"
    stored = store.keys.records[old.key_id]
    assert before + 3600 <= stored["expires_at_s"] <= after + 3600
    assert stored["rotated_to"] == rotation.new_key.key_id


def test_rotation_without_grace_expires_the_old_key_at_once(store: FakeStore) -> None:
    # Given an active tenant with a key
    tenant_id = store.add_tenant()
    old = keys.issue(tenant_id)

    # When the key is rotated with no grace
    rotation = keys.rotate(tenant_id, old.key_id, 0)

    # Then the old key answers as expired
    assert rotation.old_key.status == "expired"


def test_a_key_already_expiring_sooner_keeps_its_expiry(store: FakeStore) -> None:
    # Given a key rotated with a minute of grace
    tenant_id = store.add_tenant()
    old = keys.issue(tenant_id)
    keys.rotate(tenant_id, old.key_id, 60)
    expiry = store.keys.records[old.key_id]["expires_at_s"]
    count = len(store.keys.records)

    # When it is rotated again with a day of grace
    with pytest.raises(Conflict, match="already expiring sooner"):
        keys.rotate(tenant_id, old.key_id, 86400)

    # Then its expiry is the earlier one and no third key exists
    assert store.keys.records[old.key_id]["expires_at_s"] == expiry
    assert len(store.keys.records) == count


def test_a_revoked_key_cannot_be_rotated(store: FakeStore) -> None:
    # Given a revoked key
    tenant_id = store.add_tenant()
    old = keys.issue(tenant_id)
    keys.revoke(tenant_id, old.key_id)

    # When it is rotated
    with pytest.raises(Conflict, match="is revoked"):
        keys.rotate(tenant_id, old.key_id, 60)

    # Then no key was added
    assert list(store.keys.records) == [old.key_id]


def test_revoking_twice_gives_the_same_answer(store: FakeStore) -> None:
    # Given an issued key
    tenant_id = store.add_tenant()
    issued = keys.issue(tenant_id)

    # When it is revoked twice
    first = keys.revoke(tenant_id, issued.key_id)
    revoked_at = store.keys.records[issued.key_id]["revoked_at"]
    second = keys.revoke(tenant_id, issued.key_id)

    # Then both answers say revoked and the revocation time did not move
    assert first == second and first.status == "revoked"
    assert store.keys.records[issued.key_id]["revoked_at"] == revoked_at


def test_another_tenants_key_is_not_found(store: FakeStore) -> None:
    # Given two tenants, the first with a key
    first = store.add_tenant("t_00000000000000a1")
    second = store.add_tenant("t_00000000000000b2")
    issued = keys.issue(first)

    # When the second tenant revokes the first one's key
    with pytest.raises(NotFound):
        keys.revoke(second, issued.key_id)

    # Then the key is still active
    assert store.keys.records[issued.key_id]["status"] == "active"


def test_an_offboarded_tenant_gets_no_key(store: FakeStore) -> None:
    # Given an offboarded tenant
    tenant_id = store.add_tenant(status="deleted")

    # When a key is issued
    with pytest.raises(Conflict, match="no key can be issued"):
        keys.issue(tenant_id)

    # Then none was stored
    assert store.keys.records == {}


def test_keys_are_listed_oldest_first_without_secrets(store: FakeStore) -> None:
    # Given three keys created in a known order
    tenant_id = store.add_tenant()
    for lookup, created in (
        ("C" * 12, "2026-01-03"),
        ("A" * 12, "2026-01-02"),
        ("B" * 12, "2026-01-01"),
    ):
        store.keys.add(tenant_id, lookup, created_at=created)

    # When they are listed
    listed = keys.list_keys(tenant_id)

    # Then the oldest comes first and no answer carries a secret or a hash
    assert [k.key_id for k in listed] == ["B" * 12, "A" * 12, "C" * 12]
    assert all("secret" not in k.model_dump() and "key_hash" not in k.model_dump() for k in listed)
