"""In-memory tenant, key and provisioning repositories with the DynamoDB ones' contracts.

``install(monkeypatch)`` makes ``dal.tenants.repository``, ``dal.keys.repository`` and
``dal.provisioning.repository`` return these, so the tenant and key logic runs on dicts: each
conditional write refuses exactly what the real condition refuses, with the same domain error.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from meterbridge.dal import keys as keys_dal
from meterbridge.dal import provisioning as provisioning_dal
from meterbridge.dal import tenants as tenants_dal
from meterbridge.errors import KeyChanged, LeaseLost, TenantChanged, ValidationFailed
from meterbridge.models.cloudevent import CloudEvent
from meterbridge.models.tenant import KeyRecord, ProvisionRecord, Tenant


@dataclass
class FakeTenants:
    """``TenantRepository`` on a dict of profiles; the outbox is a list of events."""

    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    outbox: list[CloudEvent] = field(default_factory=list)
    customers: dict[str, str] = field(default_factory=dict)

    def get(self, tenant_id: str) -> Tenant | None:
        profile = self.profiles.get(tenant_id)
        return None if profile is None else Tenant.model_validate(profile)

    def plan_changes(self, tenant_id: str) -> list[Any]:
        return list(self.profiles.get(tenant_id, {}).get("plan_changes") or [])

    def create(self, tenant: Tenant) -> bool:
        if tenant.tenant_id in self.profiles:
            return False
        self.profiles[tenant.tenant_id] = tenant.model_dump(exclude_none=True)
        return True

    def link_customer(self, customer_id: str, tenant_id: str) -> bool:
        return self.customers.setdefault(customer_id, tenant_id) == tenant_id

    def transition(
        self,
        tenant_id: str,
        *,
        expect: int,
        to: Mapping[str, Any],
        event: CloudEvent | None = None,
        removes: Sequence[str] = (),
    ) -> None:
        profile = self.profiles.get(tenant_id)
        if profile is None or profile.get("version") != expect:
            raise TenantChanged(f"tenant {tenant_id} changed concurrently; read it and retry")
        profile.update(copy.deepcopy(dict(to)), version=expect + 1)
        for name in removes:
            profile.pop(name, None)
        if event is not None and all(e.id != event.id for e in self.outbox):
            self.outbox.append(event)

    def mark_offboarding(self, tenant_id: str, *, at: str) -> dict[str, Any]:
        profile = self.profiles[tenant_id]
        profile.setdefault("offboarding_at", at)
        return dict(profile)

    def scan(self, cursor: str | None, *, batch: int) -> Iterator[tuple[Tenant, str]]:
        order = sorted(self.profiles.values(), key=lambda p: (p["created_at"], p["tenant_id"]))
        positions = [f"{p['created_at']}#{p['tenant_id']}" for p in order]
        if cursor is not None and cursor not in positions:
            raise ValidationFailed("the cursor is not valid")
        start = positions.index(cursor) + 1 if cursor is not None else 0
        for profile, position in zip(order[start:], positions[start:], strict=True):
            yield Tenant.model_validate(profile), position


@dataclass
class FakeKeys:
    """``KeyRepository`` on a dict of key items (the records' attributes) by lookup id."""

    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    touched: list[str] = field(default_factory=list)

    def add(self, tenant_id: str, lookup_id: str, **fields: Any) -> None:
        """A stored key as issuing leaves it, with ``fields`` changed."""
        self.records[lookup_id] = {
            "lookup_id": lookup_id,
            "tenant_id": tenant_id,
            "prefix": "mb_test_" + lookup_id[:4],
            "key_hash": "0" * 64,
            "status": "active",
            "created_at": "2026-01-01T00:00:00Z",
            **fields,
        }

    def create(self, record: KeyRecord) -> bool:
        if record.lookup_id in self.records:
            return False
        self.records[record.lookup_id] = record.model_dump(exclude_none=True)
        return True

    def get(self, lookup_id: str) -> KeyRecord | None:
        record = self.records.get(lookup_id)
        return None if record is None else KeyRecord.model_validate(record)

    def of_tenant(self, tenant_id: str) -> list[KeyRecord]:
        return [
            KeyRecord.model_validate(r)
            for r in self.records.values()
            if r["tenant_id"] == tenant_id
        ]

    def _active(self, tenant_id: str, lookup_id: str) -> dict[str, Any] | None:
        record = self.records.get(lookup_id)
        if record is None or record["tenant_id"] != tenant_id or record["status"] != "active":
            return None
        return record

    def revoke(self, tenant_id: str, lookup_id: str, *, at: str) -> KeyRecord:
        record = self._active(tenant_id, lookup_id)
        if record is None:
            raise KeyChanged(f"key {lookup_id} is not active")
        record.update(status="revoked", revoked_at=at)
        return KeyRecord.model_validate(record)

    def rotate(self, tenant_id: str, lookup_id: str, new: KeyRecord, *, expires_at_s: int) -> None:
        old = self._active(tenant_id, lookup_id)
        sooner = old is not None and old.get("expires_at_s", expires_at_s + 1) <= expires_at_s
        if old is None or sooner or new.lookup_id in self.records:
            raise KeyChanged(
                f"key {lookup_id} changed while rotating (revoked or already expiring sooner)"
            )
        self.records[new.lookup_id] = new.model_dump(exclude_none=True)
        old.update(expires_at_s=expires_at_s, rotated_to=new.lookup_id)

    def touch(self, lookup_id: str, now_iso: str, not_since_iso: str) -> bool:
        record = self.records.get(lookup_id)
        if record is None or record.get("last_used_at", "") >= not_since_iso:
            return False
        record["last_used_at"] = now_iso
        self.touched.append(lookup_id)
        return True


@dataclass
class FakeProvisioning:
    """``ProvisioningRepository`` on a dict of records by idempotency key."""

    tenants: FakeTenants
    keys: FakeKeys
    records: dict[str, dict[str, Any]] = field(default_factory=dict)

    def start(self, record: ProvisionRecord) -> bool:
        if record.idempotency_key in self.records:
            return False
        self.records[record.idempotency_key] = {**record.model_dump(), "state": "in_progress"}
        return True

    def get(self, idempotency_key: str) -> ProvisionRecord | None:
        record = self.records.get(idempotency_key)
        return None if record is None else ProvisionRecord.model_validate(record)

    def _held(self, idempotency_key: str, owner: str | None) -> dict[str, Any]:
        record = self.records.get(idempotency_key)
        if record is None or record["lease_owner"] != owner or record["state"] != "in_progress":
            raise LeaseLost("the provisioning lease was taken over")
        return record

    def take_over(
        self, idempotency_key: str, *, owner: str, expired_owner: str | None, until: int, now: int
    ) -> ProvisionRecord:
        record = self._held(idempotency_key, expired_owner)
        if record["lease_until"] > now:
            raise LeaseLost("another worker holds this provisioning request")
        record.update(lease_owner=owner, lease_until=until)
        return ProvisionRecord.model_validate(record)

    def record(self, idempotency_key: str, owner: str, **steps: Any) -> None:
        self._held(idempotency_key, owner).update(steps)

    def release(self, idempotency_key: str, owner: str) -> None:
        self.record(idempotency_key, owner, lease_until=0)

    def complete(
        self,
        idempotency_key: str,
        owner: str,
        *,
        key: KeyRecord,
        profile: Mapping[str, Any],
        response: str,
        at: str,
        event: CloudEvent,
    ) -> None:
        record = self._held(idempotency_key, owner)
        tenant = self.tenants.profiles.get(key.tenant_id)
        collides = key.lookup_id in self.keys.records
        if tenant is None or tenant["status"] != "provisioning" or collides:
            raise LeaseLost("the provisioning lease was taken over before it completed")
        self.keys.records[key.lookup_id] = key.model_dump(exclude_none=True)
        tenant.update(profile)
        record.update(key_id=key.lookup_id, completed_at=at, response=response, state="completed")
        self.tenants.outbox.append(event)


@dataclass
class FakeStore:
    """The three repositories of one tenants table."""

    tenants: FakeTenants = field(default_factory=FakeTenants)
    keys: FakeKeys = field(default_factory=FakeKeys)
    provisioning: FakeProvisioning = field(init=False)

    def __post_init__(self) -> None:
        self.provisioning = FakeProvisioning(self.tenants, self.keys)

    def add_tenant(
        self, tenant_id: str = "t_0123456789abcdef", *, status: str = "active", **fields: Any
    ) -> str:
        """A profile as provisioning leaves it (version 1 once active)."""
        self.tenants.profiles[tenant_id] = {
            "tenant_id": tenant_id,
            "name": "Acme",
            "email": "billing@example.com",
            "plan": "basic",
            "status": status,
            "stripe": "skipped",
            "created_at": "2026-01-01T00:00:00Z",
            "version": 1,
            **fields,
        }
        return tenant_id


def install(monkeypatch: pytest.MonkeyPatch) -> FakeStore:
    """Point the tenant, key and provisioning repositories at one fresh ``FakeStore``."""
    store = FakeStore()
    monkeypatch.setattr(tenants_dal, "repository", lambda _settings: store.tenants)
    monkeypatch.setattr(keys_dal, "repository", lambda _settings: store.keys)
    monkeypatch.setattr(provisioning_dal, "repository", lambda _settings: store.provisioning)
    return store
