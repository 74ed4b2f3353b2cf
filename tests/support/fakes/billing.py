"""In-memory billing: ``meterbridge.dal.billing``'s verbs over a dict, and a Stripe invoices
stand-in, so the overage logic (``logic.billing.invoice``) runs in unit tests with sockets off.

The repository keeps the DAL's semantics: one record per (tenant, period, meter, invoice
period); ``claim`` refuses an existing key; ``mark_billed`` moves ``pending`` to ``billed`` once.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from meterbridge.dal import billing as billing_dal
from meterbridge.models.billing import BillingRecord

Key = tuple[str, str, str, str]


def _key(record: BillingRecord) -> Key:
    return (record.tenant_id, record.period, record.meter, record.invoice_period)


class FakeBillingRepository:
    def __init__(self) -> None:
        self.stored: dict[Key, BillingRecord] = {}

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeBillingRepository:
        """Stand in for ``meterbridge.dal.billing`` for the rest of the test."""
        for verb in ("records", "find", "claim", "mark_billed"):
            monkeypatch.setattr(billing_dal, verb, getattr(self, verb))
        return self

    def records(self, table: str, tenant_id: str, period: str, meter: str) -> list[BillingRecord]:
        # As the table's query: ordered by the sort key (the invoice period).
        return [r for k, r in sorted(self.stored.items()) if k[:3] == (tenant_id, period, meter)]

    def find(
        self, table: str, tenant_id: str, period: str, meter: str, invoice_period: str
    ) -> BillingRecord | None:
        return self.stored.get((tenant_id, period, meter, invoice_period))

    def claim(self, table: str, record: BillingRecord) -> bool:
        if _key(record) in self.stored:
            return False
        self.stored[_key(record)] = replace(record, state="pending")
        return True

    def mark_billed(self, table: str, record: BillingRecord, item_id: str, at: str) -> bool:
        stored = self.stored.get(_key(record))
        if stored is None or stored.state != "pending":
            return False
        self.stored[_key(record)] = replace(stored, state="billed", item_id=item_id, billed_at=at)
        return True


class FakeInvoices:
    """The ``StripeInvoices`` calls the overage logic makes: invoices by id, their items, and
    item creation under an idempotency key (a repeated key answers the first item)."""

    def __init__(self) -> None:
        self.invoices: dict[str, dict[str, Any]] = {}
        self.items: list[dict[str, Any]] = []
        self.created_by_key: dict[str, str] = {}

    def add_invoice(self, invoice_id: str, customer: str, status: str = "draft") -> dict[str, Any]:
        self.invoices[invoice_id] = {"id": invoice_id, "customer": customer, "status": status}
        return self.invoices[invoice_id]

    def invoice(self, invoice_id: str) -> dict[str, Any]:
        return dict(self.invoices[invoice_id])

    def invoice_items(self, **filters: Any) -> list[dict[str, Any]]:
        return [i for i in self.items if all(i.get(k) == v for k, v in filters.items())]

    def create_invoice_item(self, params: dict[str, Any], idempotency_key: str) -> str:
        if idempotency_key in self.created_by_key:
            return self.created_by_key[idempotency_key]
        item_id = f"ii_{len(self.items) + 1}"
        self.items.append({"id": item_id, **params, "invoice": params.get("invoice")})
        self.created_by_key[idempotency_key] = item_id
        return item_id
