"""Billing records: one per invoice line meterbridge adds, beside the period's counters.

``pk = <tenant>#<period>#<meter>`` (the counter key), ``sk = BILL#<invoice period>``; no TTL.
``state`` is ``pending`` (claimed, the Stripe call may or may not have happened) or ``billed``
(the Stripe invoice item exists: ``item_id``). The claim stores everything the Stripe call
sends, so a redelivery repeats exactly the same call under the same idempotency key.
"""

from __future__ import annotations

from typing import Any

from meterbridge.dal import dynamo
from meterbridge.dal.usage import counter_pk

BILL_PREFIX = "BILL#"


def record_key(tenant_id: str, period: str, meter: str, invoice_period: str) -> dict[str, str]:
    return {"pk": counter_pk(tenant_id, period, meter), "sk": BILL_PREFIX + invoice_period}


def records(table: str, tenant_id: str, period: str, meter: str) -> list[dict[str, Any]]:
    """Every line recorded for one (tenant, period, meter), whatever invoice carries it."""
    items, _ = dynamo.query(
        table,
        key_condition="pk = :p AND begins_with(sk, :s)",
        vals={":p": counter_pk(tenant_id, period, meter), ":s": BILL_PREFIX},
        consistent=True,
    )
    return items


def claim(table: str, record: dict[str, Any]) -> bool:
    """Write a ``pending`` record unless one exists for its key (True: ours)."""
    return dynamo.put_new(table, {**record, "state": "pending"})


def mark_billed(table: str, key: dict[str, str], item_id: str, at: str) -> bool:
    """``pending`` -> ``billed`` with the Stripe item id (False: it was already billed)."""
    return dynamo.update_if(
        table,
        key,
        set_="SET #s = :billed, item_id = :item, billed_at = :at",
        condition="#s = :pending",
        names={"#s": "state"},
        vals={":billed": "billed", ":pending": "pending", ":item": item_id, ":at": at},
    )
