"""Billing records: one per invoice line meterbridge adds, beside the period's counters.

``pk = <tenant>#<period>#<meter>`` (the counter key), ``sk = BILL#<invoice period>``; no TTL.
The item holds the ``BillingRecord``'s fields; ``state`` is ``pending`` or ``billed`` (then with
``item_id`` and ``billed_at``). Logic speaks ``BillingRecord``s; the keys stay here.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

from meterbridge.dal import dynamo
from meterbridge.dal.usage import counter_pk
from meterbridge.models.billing import BillingRecord

BILL_PREFIX = "BILL#"
_FIELDS = tuple(f.name for f in fields(BillingRecord))


def _key(tenant_id: str, period: str, meter: str, invoice_period: str) -> dict[str, str]:
    return {"pk": counter_pk(tenant_id, period, meter), "sk": BILL_PREFIX + invoice_period}


def _record(item: dict[str, Any]) -> BillingRecord:
    values = {name: item[name] for name in _FIELDS if name in item}
    values.setdefault("invoice_period", str(item["sk"]).removeprefix(BILL_PREFIX))
    return BillingRecord(**values)


def records(table: str, tenant_id: str, period: str, meter: str) -> list[BillingRecord]:
    """Every line recorded for one (tenant, period, meter), whatever invoice carries it."""
    items, _ = dynamo.query(
        table,
        key_condition="pk = :p AND begins_with(sk, :s)",
        vals={":p": counter_pk(tenant_id, period, meter), ":s": BILL_PREFIX},
        consistent=True,
    )
    return [_record(item) for item in items]


def find(
    table: str, tenant_id: str, period: str, meter: str, invoice_period: str
) -> BillingRecord | None:
    """The line of (tenant, period, meter) that the invoice of ``invoice_period`` carries."""
    return next(
        (r for r in records(table, tenant_id, period, meter) if r.invoice_period == invoice_period),
        None,
    )


def claim(table: str, record: BillingRecord) -> bool:
    """Write ``record`` as ``pending`` unless a line exists for its key (True: ours)."""
    values = {k: v for k, v in asdict(record).items() if v is not None}
    key = _key(record.tenant_id, record.period, record.meter, record.invoice_period)
    return dynamo.put_new(table, {**key, **values, "state": "pending"})


def mark_billed(table: str, record: BillingRecord, item_id: str, at: str) -> bool:
    """``pending`` -> ``billed`` with the Stripe item id (False: it was already billed)."""
    return dynamo.update_if(
        table,
        _key(record.tenant_id, record.period, record.meter, record.invoice_period),
        set_="SET #s = :billed, item_id = :item, billed_at = :at",
        condition="#s = :pending",
        names={"#s": "state"},
        vals={":billed": "billed", ":pending": "pending", ":item": item_id, ":at": at},
    )
