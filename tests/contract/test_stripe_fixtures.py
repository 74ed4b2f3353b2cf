"""Contract tests: the versioned Stripe fixtures match the pinned client's API version and
object shapes, and parse into meterbridge's models and translations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import stripe

from meterbridge.logic.stripe.translate import TRANSLATIONS, translate
from meterbridge.models.stripe import StripeEvent

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "events" / f"stripe-{stripe.api_version}"
FIXTURE_FILES = sorted(FIXTURES.glob("*.json"))

OBJECT_CLASSES: dict[str, type] = {
    "subscription": stripe.Subscription,
    "invoice": stripe.Invoice,
    "checkout.session": stripe.checkout.Session,
    "customer": stripe.Customer,
}


def fields_of(cls: type) -> set[str]:
    names: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        names.update(getattr(klass, "__annotations__", {}))
    return {n for n in names if not n.startswith("_")}


def unknown_fields(obj: dict[str, Any], cls: type) -> set[str]:
    return set(obj) - fields_of(cls)


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def test_there_is_a_fixture_per_translated_type_for_the_pinned_version() -> None:
    # Given the API version the installed stripe package pins
    # When the fixtures directory for that version is listed
    names = {p.stem for p in FIXTURE_FILES}
    # Then every translated type has a fixture (and one ignored type is there too)
    assert set(TRANSLATIONS) <= names
    assert names - set(TRANSLATIONS), "an ignored type fixture is expected too"


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.stem)
def test_fixture_envelope_matches_the_pinned_client(path: Path) -> None:
    # Given one fixture
    raw = load(path)
    # When it is parsed by meterbridge and by the stripe client
    event = StripeEvent.model_validate(raw)
    constructed = stripe.Event.construct_from(raw, "sk_test_contract")
    # Then both agree on the envelope, and the envelope has no field the client does not know
    assert event.type == path.stem == constructed.type
    assert event.api_version == stripe.api_version
    assert constructed.id == event.id and constructed.created == event.created
    assert unknown_fields(raw, stripe.Event) == set()


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.stem)
def test_fixture_object_fields_exist_in_the_pinned_client(path: Path) -> None:
    # Given one fixture's data.object
    obj = load(path)["data"]["object"]
    cls = OBJECT_CLASSES[obj["object"]]
    # When its fields are compared with the client's model of that object
    constructed = stripe.Event.construct_from(load(path), "sk_test_contract").data.object
    # Then the client builds the right class and knows every field (removed fields would show)
    assert isinstance(constructed, cls)
    assert unknown_fields(obj, cls) == set()


def test_subscription_nested_shapes_match_the_pinned_client() -> None:
    # Given the subscription fixture
    obj = load(FIXTURES / "customer.subscription.updated.json")["data"]["object"]
    item = obj["items"]["data"][0]
    # When its nested objects are compared with the client's models
    # Then items carry the period (moved there from the subscription) and a full price
    assert unknown_fields(item, stripe.SubscriptionItem) == set()
    assert unknown_fields(item["price"], stripe.Price) == set()
    assert unknown_fields(item["plan"], stripe.Plan) == set()
    assert {"current_period_start", "current_period_end"} <= set(item)
    assert "current_period_end" not in obj


def test_invoice_nested_shapes_match_the_pinned_client() -> None:
    # Given the invoice fixtures
    for name in ("invoice.paid", "invoice.payment_failed"):
        obj = load(FIXTURES / f"{name}.json")["data"]["object"]
        line = obj["lines"]["data"][0]
        # When the parent and line shapes are compared with the client's models
        # Then the subscription sits under parent.subscription_details, the price under pricing
        assert unknown_fields(obj["parent"], stripe.Invoice.Parent) == set()
        assert (
            unknown_fields(
                obj["parent"]["subscription_details"], stripe.Invoice.Parent.SubscriptionDetails
            )
            == set()
        )
        assert unknown_fields(line, stripe.InvoiceLineItem) == set()
        assert unknown_fields(line["pricing"], stripe.InvoiceLineItem.Pricing) == set()
        assert "subscription" not in obj


@pytest.mark.parametrize(
    ("name", "billing_type", "plan", "status"),
    [
        ("checkout.session.completed", "subscription.started", None, "paid"),
        ("customer.subscription.created", "subscription.started", "basic", "active"),
        ("customer.subscription.updated", "subscription.updated", "pro", "active"),
        ("customer.subscription.deleted", "subscription.ended", "free", "canceled"),
        ("invoice.paid", "payment.success", "basic", "paid"),
        ("invoice.payment_failed", "payment.failed", "basic", "open"),
    ],
)
def test_fixtures_translate(name: str, billing_type: str, plan: str | None, status: str) -> None:
    # Given a fixture of a translated type
    event = StripeEvent.model_validate(load(FIXTURES / f"{name}.json"))
    # When it is translated
    change = translate(event)
    # Then the billing type, tenant hint, customer, subscription, plan and status are found
    assert change is not None
    assert change.billing_type == billing_type
    assert change.tenant_hint == "t_0123456789abcdef"
    assert change.customer_id == "cus_RkB2mXJ9dQ4sTz"
    assert change.subscription_id == "sub_1QvGZ2LkdIwHu7ixK3c0xYzA"
    assert change.data.get("plan") == plan
    assert change.data.get("status") == status
    cloud_event = change.cloud_event("t_0123456789abcdef")
    assert cloud_event.id == event.id and cloud_event.type == billing_type


def test_ignored_fixture_translates_to_nothing() -> None:
    # Given the fixture of a type meterbridge does not translate
    event = StripeEvent.model_validate(load(FIXTURES / "customer.updated.json"))
    # When it is translated / Then nothing comes out
    assert translate(event) is None
