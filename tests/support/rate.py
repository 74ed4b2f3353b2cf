"""Driving logic/rate.py's shared minute window in tests."""

from __future__ import annotations

from datetime import datetime

from meterbridge.errors import RateLimited
from meterbridge.logic import rate
from meterbridge.plans import Plan
from meterbridge.settings import Settings


def take(times: int, tenant_id: str, plan: Plan, settings: Settings, now: datetime) -> None:
    """``times`` requests of the tenant in the window of ``now`` (each must pass)."""
    for _ in range(times):
        rate.take_shared(tenant_id, plan, settings, now)


def admitted_until_refused(tenant_id: str, plan: Plan, settings: Settings, now: datetime) -> int:
    """Requests the shared window admits in the minute of ``now`` until its first refusal."""
    admitted = 0
    while True:
        try:
            rate.take_shared(tenant_id, plan, settings, now)
        except RateLimited:
            return admitted
        admitted += 1
