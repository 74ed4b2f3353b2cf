"""Provisioning's idempotency and the tenant list's cursor, against the in-memory repositories."""

import pytest

from meterbridge.errors import IdempotencyMismatch, LeaseLost, ValidationFailed
from meterbridge.logic.tenants import provisioning, queries
from meterbridge.models.tenant import TenantCreate
from tests.support.fakes.tenants import FakeStore


def request(name: str = "Acme") -> TenantCreate:
    # Built in the test: the plan check reads the catalogue through the test's settings.
    return TenantCreate(name=name, email="billing@example.com", plan="basic")


def test_provisioning_replays_a_completed_request_without_the_secret(store: FakeStore) -> None:
    # Given a tenant provisioned with an Idempotency-Key (Stripe not configured)
    first, events = provisioning.provision_sync(request(), "idem-key-0001")

    # When the same request comes again
    again, more = provisioning.provision_sync(request(), "idem-key-0001")

    # Then the first answer had the secret, the replay the same tenant and key without it
    assert first.secret_included and first.tenant.status == "active"
    assert [e.type for e in events] == ["tenant.provisioned"]
    assert again.replayed and not again.secret_included and more == []
    assert again.tenant == first.tenant
    assert again.api_key.key_id == first.api_key.key_id
    assert len(store.tenants.profiles) == 1 and len(store.keys.records) == 1


def test_the_same_key_with_another_body_is_refused(store: FakeStore) -> None:
    # Given a provisioned tenant
    provisioning.provision_sync(request(), "idem-key-0002")

    # When the key is reused with another body
    with pytest.raises(IdempotencyMismatch):
        provisioning.provision_sync(request("Other"), "idem-key-0002")

    # Then no second tenant exists
    assert len(store.tenants.profiles) == 1


def test_a_failed_last_step_is_resumed_by_the_retry(
    store: FakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the completing step fails once
    real = store.provisioning.complete
    calls: list[str] = []

    def once(*args: object, **kwargs: object) -> None:
        calls.append("complete")
        if len(calls) == 1:
            raise RuntimeError("injected: storage failed")
        real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store.provisioning, "complete", once)

    # When the request is made and retried
    with pytest.raises(RuntimeError):
        provisioning.provision_sync(request(), "idem-key-0003")
    result, _ = provisioning.provision_sync(request(), "idem-key-0003")

    # Then the retry took the released lease over and finished the same tenant
    assert result.secret_included and not result.replayed
    assert list(store.tenants.profiles) == [result.tenant.tenant_id]
    assert len(store.keys.records) == 1


def test_a_lost_lease_while_completing_answers_in_progress(
    store: FakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given another worker takes the lease over before this one completes
    def lost(*_args: object, **_kwargs: object) -> None:
        raise LeaseLost("the provisioning lease was taken over before it completed")

    monkeypatch.setattr(store.provisioning, "complete", lost)

    # When the request is made
    with pytest.raises(provisioning.ProvisioningInProgress) as refused:
        provisioning.provision_sync(request(), "idem-key-0004")

    # Then the answer is a 409 asking to retry
    assert refused.value.status == 409 and refused.value.headers == {"Retry-After": "2"}


def test_a_missing_idempotency_key_is_refused(store: FakeStore) -> None:
    # Given no Idempotency-Key
    # When a tenant is provisioned
    with pytest.raises(ValidationFailed, match="Idempotency-Key"):
        provisioning.provision_sync(request(), None)

    # Then nothing was written
    assert store.tenants.profiles == {} and store.provisioning.records == {}


def test_the_list_filters_and_continues_after_the_last_tenant_returned(store: FakeStore) -> None:
    # Given five tenants, every other one suspended
    for i in range(5):
        store.add_tenant(
            f"t_{i:016x}",
            status="suspended" if i % 2 else "active",
            created_at=f"2026-01-0{i + 1}T00:00:00Z",
        )

    # When the active ones are listed two at a time
    first = queries.list_tenants(status="active", limit=2)
    rest = queries.list_tenants(status="active", limit=2, cursor=first.next_cursor)

    # Then the pages hold the active tenants in order, and the last page has no cursor
    assert [t.tenant_id for t in first.items] == [f"t_{0:016x}", f"t_{2:016x}"]
    assert [t.tenant_id for t in rest.items] == [f"t_{4:016x}"]
    assert rest.next_cursor is None
