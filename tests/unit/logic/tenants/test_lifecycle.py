"""Lifecycle transitions: which are allowed, which are refused, and what each writes."""

import pytest

from meterbridge.errors import Conflict, TenantChanged
from meterbridge.logic.tenants import lifecycle
from meterbridge.models.tenant import TenantUpdate
from tests.support.fakes.tenants import FakeStore


def test_suspending_an_active_tenant_moves_the_version_and_writes_its_event(
    store: FakeStore,
) -> None:
    # Given an active tenant at version 1
    tenant_id = store.add_tenant()

    # When it is suspended
    tenant, events = lifecycle.suspend_sync(tenant_id)

    # Then the profile is suspended at version 2, with one event in the outbox
    assert (tenant.status, tenant.version) == ("suspended", 2)
    assert [e.type for e in events] == ["tenant.suspended"]
    assert store.tenants.outbox == events
    assert events[0].subject == tenant_id


def test_suspending_twice_changes_nothing(store: FakeStore) -> None:
    # Given a suspended tenant
    tenant_id = store.add_tenant(status="suspended")

    # When it is suspended again
    tenant, events = lifecycle.suspend_sync(tenant_id)

    # Then nothing is written
    assert (tenant.status, tenant.version) == ("suspended", 1)
    assert events == [] and store.tenants.outbox == []


def test_resuming_a_suspended_tenant_makes_it_active(store: FakeStore) -> None:
    # Given a suspended tenant
    tenant_id = store.add_tenant(status="suspended")

    # When it is resumed
    tenant, events = lifecycle.resume_sync(tenant_id)

    # Then it is active again and the event says so
    assert tenant.status == "active"
    assert [e.type for e in events] == ["tenant.resumed"]


@pytest.mark.parametrize(
    ("status", "message"),
    [("deleted", "is offboarded"), ("provisioning", "still provisioning")],
)
@pytest.mark.parametrize("step", [lifecycle.suspend_sync, lifecycle.resume_sync])
def test_an_offboarded_or_provisioning_tenant_refuses_suspend_and_resume(
    store: FakeStore, status: str, message: str, step: object
) -> None:
    # Given a tenant that is offboarded or still provisioning
    tenant_id = store.add_tenant(status=status)

    # When it is suspended or resumed
    with pytest.raises(Conflict, match=message):
        step(tenant_id)  # type: ignore[operator]

    # Then the profile and the outbox are untouched
    assert store.tenants.profiles[tenant_id]["status"] == status
    assert store.tenants.outbox == []


def test_a_change_made_meanwhile_refuses_the_transition(
    store: FakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a tenant whose profile another writer moves on right after it is read
    tenant_id = store.add_tenant()
    read = lifecycle.get_tenant

    def read_then_someone_writes(tid: str, settings: object = None) -> object:
        tenant = read(tid, settings)  # type: ignore[arg-type]
        store.tenants.profiles[tid]["version"] += 1
        return tenant

    monkeypatch.setattr(lifecycle, "get_tenant", read_then_someone_writes)

    # When it is suspended
    with pytest.raises(TenantChanged, match="changed concurrently") as refused:
        lifecycle.suspend_sync(tenant_id)

    # Then the refusal is a 409 and nothing was written
    assert refused.value.status == 409
    assert store.tenants.profiles[tenant_id]["status"] == "active"
    assert store.tenants.outbox == []


def test_renaming_announces_nothing(store: FakeStore) -> None:
    # Given an active tenant
    tenant_id = store.add_tenant()

    # When only its name changes
    tenant, events = lifecycle.update_sync(tenant_id, TenantUpdate(name="Acme Two"))

    # Then the profile moves on without a lifecycle event
    assert (tenant.name, tenant.version) == ("Acme Two", 2)
    assert events == [] and store.tenants.outbox == []


def test_offboarding_revokes_the_active_keys_and_answers_as_it_is_afterwards(
    store: FakeStore,
) -> None:
    # Given an active tenant with two active keys and a revoked one (no Stripe configured)
    tenant_id = store.add_tenant()
    for lookup, status in (("A" * 12, "active"), ("B" * 12, "active"), ("C" * 12, "revoked")):
        store.keys.add(tenant_id, lookup, status=status)

    # When it is offboarded, and offboarded again
    tenant, events = lifecycle.offboard_sync(tenant_id)
    again, more = lifecycle.offboard_sync(tenant_id)

    # Then every key is revoked, the tenant is deleted with a retention date, and the second
    # call changes nothing
    assert {r["status"] for r in store.keys.records.values()} == {"revoked"}
    assert tenant.status == "deleted" and tenant.retain_until is not None
    assert [e.type for e in events] == ["tenant.offboarded"]
    assert events[0].data["keys_revoked"] == 2
    assert again == tenant and more == []
