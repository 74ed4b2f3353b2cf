"""The guarded subscription write of ``meterbridge.dal.tenant_state`` over a dict: a state is
stored only when its ordering key (``state_key(created, rank)``) is greater than the stored one,
as the DynamoDB condition does. Unit tests of Stripe ordering run against it with sockets off."""

from __future__ import annotations

from typing import Any

import pytest

from meterbridge.dal import tenant_state


class FakeSubscriptionState:
    def __init__(self, tenant_id: str, plan: str = "free") -> None:
        self.profile: dict[str, Any] = {"tenant_id": tenant_id, "plan": plan}
        self.writes = 0  # guarded writes sent, accepted or not

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeSubscriptionState:
        monkeypatch.setattr(tenant_state, "apply_subscription", self.apply_subscription)
        return self

    def apply_subscription(self, table: str, tenant_id: str, **fields: Any) -> bool:
        self.writes += 1
        key = tenant_state.state_key(fields["at"], fields["rank"])
        stored = tenant_state.stored_state_key(self.profile)
        current = self.profile.get("stripe_subscription_id")
        if tenant_id != self.profile["tenant_id"] or (stored is not None and stored >= key):
            return False
        if fields["ends_subscription"] and current and fields["subscription_id"] != current:
            return False
        self.profile["stripe_state_key"] = key
        self.profile["stripe_subscription"] = {
            "event": fields["event_id"],
            "status": fields["status"],
        }
        if fields["subscription_id"]:
            self.profile["stripe_subscription_id"] = fields["subscription_id"]
        if fields["plan"]:
            self.profile["plan"] = fields["plan"]
        return True
