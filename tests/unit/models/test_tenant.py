"""Admin API input models: strict, bounded, catalogue-checked (no network)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from meterbridge.models.tenant import (
    IDEMPOTENCY_KEY_RE,
    ApiKey,
    IssuedKey,
    KeyRotate,
    TenantCreate,
    TenantUpdate,
)


def test_a_valid_create_is_trimmed() -> None:
    # Given / When
    req = TenantCreate(name="  Acme  ", email=" billing@acme.example ", plan="pro")

    # Then
    assert (req.name, req.email, req.plan) == ("Acme", "billing@acme.example", "pro")


@pytest.mark.parametrize(
    "fields",
    [
        {"plan": "gold"},
        {"email": "no-at-sign"},
        {"email": "a@b"},
        {"email": "a b@c.example"},
        {"email": "a@-bad.example"},
        {"email": "x" * 250 + "@a.example"},
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 201},
        {"name": "tab\there"},
        {"unknown": 1},
    ],
)
def test_bad_creates_are_refused(fields: dict) -> None:
    # Given a valid body with one bad field
    base = {"name": "Acme", "email": "billing@acme.example", "plan": "basic"}

    # When / Then
    with pytest.raises(ValidationError):
        TenantCreate(**{**base, **fields})


def test_name_of_200_characters_is_accepted() -> None:
    assert len(TenantCreate(name="x" * 200, email="a@b.example", plan="free").name) == 200


def test_update_needs_a_field_and_checks_the_plan() -> None:
    # Given / When / Then
    assert TenantUpdate(plan="pro").plan == "pro"
    for bad in ({}, {"plan": "gold"}, {"status": "active"}):
        with pytest.raises(ValidationError):
            TenantUpdate(**bad)


def test_rotation_grace_is_bounded() -> None:
    assert KeyRotate().grace_seconds == 24 * 3600
    with pytest.raises(ValidationError):
        KeyRotate(grace_seconds=-1)
    with pytest.raises(ValidationError):
        KeyRotate(grace_seconds=8 * 24 * 3600)


def test_listed_keys_have_no_secret_field() -> None:
    # Given an issued key
    issued = IssuedKey(
        key_id="abcdefghijkl",
        tenant_id="t_0123456789abcdef",
        prefix="mb_test_abcd",
        status="active",
        created_at="2025-01-01T00:00:00Z",
        secret="mb_test_secret",
    )

    # When it is shown as a listed key
    listed = ApiKey.model_validate(issued.model_dump())

    # Then the secret is gone
    assert "secret" not in listed.model_dump()


def test_idempotency_keys_are_bounded_printable_tokens() -> None:
    assert IDEMPOTENCY_KEY_RE.match("3f2b9c1e-5d7a-4e11-9b8e-0c2d4f6a8b10")
    for bad in ("short", "has space in it", "x" * 256, "new\nline-key"):
        assert not IDEMPOTENCY_KEY_RE.match(bad)
