"""Provisioning records in the tenants table: the lease that decides which worker provisions.

``PROVISION#<idempotency-key>``/``PROVISION`` (docs/tenants.md) holds the request's hash, the
tenant id it provisions, the steps done so far, and the lease: ``lease_owner`` and
``lease_until`` (epoch seconds). Every step is written only while its worker holds the lease
(``state = in_progress`` and ``lease_owner`` is the worker); a write that finds the lease gone
raises ``LeaseLost``. The last step, ``complete``, is one transaction: the first key, the
profile made active, the lifecycle event in the outbox and the record completed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from meterbridge.dal import dynamo
from meterbridge.dal import keys as keys_dal
from meterbridge.dal import tenants as tenants_dal
from meterbridge.errors import ConditionFailed, LeaseLost
from meterbridge.models.tenant import KeyRecord, ProvisionRecord

if TYPE_CHECKING:  # pragma: no cover
    from meterbridge.models.cloudevent import CloudEvent
    from meterbridge.settings import Settings

PROVISION_SK = "PROVISION"
IN_PROGRESS = "in_progress"
COMPLETED = "completed"
# Held by this worker and not yet completed: the condition of every step after the claim.
_HELD = "lease_owner = :me AND #st = :busy"


def provision_pk(idempotency_key: str) -> str:
    return f"PROVISION#{idempotency_key}"


def provision_key(idempotency_key: str) -> dict[str, str]:
    return {"pk": provision_pk(idempotency_key), "sk": PROVISION_SK}


def _held_update(
    table: str, idempotency_key: str, owner: str, fields: Mapping[str, Any]
) -> dict[str, Any]:
    """The ``Update`` that writes ``fields`` only while ``owner`` holds the lease."""
    set_, names, vals = tenants_dal.set_expr(fields)
    names["#st"] = "state"
    vals.update({":me": owner, ":busy": IN_PROGRESS})
    return tenants_dal.update_op(
        table, provision_key(idempotency_key), set_=set_, condition=_HELD, names=names, vals=vals
    )


class ProvisioningRepository:
    """The provisioning records, in the provisioning logic's verbs: models in and out."""

    def __init__(self, table: str, events_table: str) -> None:
        self.table = table
        self.events_table = events_table

    def start(self, record: ProvisionRecord) -> bool:
        """Create the record with its first lease: True if this call created it."""
        # The steps not yet done stay absent (as their defaults say), as they always were.
        item = record.model_dump(exclude_defaults=True)
        return dynamo.put_new(
            self.table, {**provision_key(record.idempotency_key), **item, "state": IN_PROGRESS}
        )

    def get(self, idempotency_key: str) -> ProvisionRecord | None:
        item = dynamo.get(self.table, provision_key(idempotency_key))
        return None if item is None else ProvisionRecord.model_validate(item)

    def take_over(
        self, idempotency_key: str, *, owner: str, expired_owner: str | None, until: int, now: int
    ) -> ProvisionRecord:
        """Take the expired lease of ``expired_owner``; ``LeaseLost`` if another worker took it
        over first or the request is done."""
        try:
            taken = dynamo.update(
                self.table,
                provision_key(idempotency_key),
                set_="SET lease_owner = :me, lease_until = :u",
                condition="#st = :busy AND lease_owner = :old AND lease_until <= :now",
                names={"#st": "state"},
                vals={
                    ":me": owner,
                    ":u": until,
                    ":busy": IN_PROGRESS,
                    ":old": expired_owner,
                    ":now": now,
                },
            )
        except ConditionFailed as exc:
            raise LeaseLost("another worker holds this provisioning request") from exc
        assert taken is not None
        return ProvisionRecord.model_validate(taken)

    def record(self, idempotency_key: str, owner: str, **steps: Any) -> None:
        """Record finished steps (``ProvisionRecord`` fields), only while ``owner`` holds the
        lease (else ``LeaseLost``)."""
        op = _held_update(self.table, idempotency_key, owner, steps)["Update"]
        try:
            dynamo.call("update_item", f"update {self.table}", **op)
        except ConditionFailed as exc:
            raise LeaseLost("the provisioning lease was taken over") from exc

    def release(self, idempotency_key: str, owner: str) -> None:
        """Give the lease back after a failed step, so a retry resumes at once."""
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
        """The last step, one transaction: store the first ``key``, apply ``profile`` to the
        tenant still provisioning, put ``event`` in the outbox and complete the record at ``at``
        with the ``response`` to replay. All of it or none: ``LeaseLost`` if the lease or the
        profile moved on."""
        tenant_id = key.tenant_id
        done = {"key_id": key.lookup_id, "completed_at": at, "response": response}
        profile_set, profile_names, profile_vals = tenants_dal.set_expr(profile)
        profile_names["#s"] = "status"
        profile_vals[":provisioning"] = "provisioning"
        ops = [
            *keys_dal.key_put_ops(self.table, key.model_dump(exclude_none=True)),
            tenants_dal.update_op(
                self.table,
                tenants_dal.profile_key(tenant_id),
                set_=profile_set,
                condition="#s = :provisioning",
                names=profile_names,
                vals=profile_vals,
            ),
            _held_update(self.table, idempotency_key, owner, {**done, "state": COMPLETED}),
            *tenants_dal.outbox_ops(self.events_table, event, tenant_id),
        ]
        try:
            tenants_dal.transact_write(ops)
        except ConditionFailed as exc:
            raise LeaseLost("the provisioning lease was taken over before it completed") from exc


def repository(settings: Settings) -> ProvisioningRepository:
    """The provisioning repository of ``settings``' tables (the unit tests replace this)."""
    return ProvisioningRepository(settings.tenants_table, settings.events_table)
