"""Tenants and API keys as the admin API sees them: inputs (strict) and outputs (no secrets).

Inputs forbid unknown fields and check plan ids against the catalogue, so bad input is refused
with a 400 before anything is written. Outputs never carry a key hash; only ``IssuedKey`` carries
a secret, and only in the response of the call that created it.
"""

# No ``from __future__ import annotations`` here: pydantic would compile and evaluate every
# field's annotation string when the model class is built, which the cold start pays
# (docs/performance/cold_start.md).
import re
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

TENANT_ID_PATTERN = r"^t_[0-9a-f]{16}$"
KEY_ID_PATTERN = r"^[0-9A-Za-z]{12}$"
# Deliberately strict (no quoted local parts, no IP literals): an operator types a billing
# contact, and Stripe refuses what this refuses anyway. email-validator is not a dependency.
EMAIL_RE = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
# Printable ASCII without spaces: what clients put in Idempotency-Key headers (UUIDs, ULIDs).
IDEMPOTENCY_KEY_RE = re.compile(r"^[A-Za-z0-9._:~+/=-]{8,255}$")

TenantStatus = Literal["provisioning", "active", "suspended", "deleted"]
KeyStatus = Literal["active", "revoked", "expired"]
StripeState = Literal["ok", "skipped", "pending"]

MAX_GRACE_S = 7 * 24 * 3600
DEFAULT_GRACE_S = 24 * 3600


def _check_email(value: str) -> str:
    value = value.strip()
    if len(value) > 254 or not EMAIL_RE.match(value):
        raise ValueError("must be an email address like billing@example.com")
    return value


def _check_plan(value: str) -> str:
    from meterbridge.plans import catalog

    plans = catalog().plans
    if value not in plans:
        raise ValueError(f"unknown plan {value!r}; one of {', '.join(sorted(plans))}")
    return value


def _check_name(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be blank")
    if any(ord(ch) < 32 for ch in value):
        raise ValueError("must not contain control characters")
    return value


class TenantCreate(BaseModel):
    """``POST /admin/tenants``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    email: str = Field(min_length=3, max_length=254)
    plan: str = Field(min_length=1, max_length=64)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        return _check_email(value)

    @field_validator("plan")
    @classmethod
    def _plan(cls, value: str) -> str:
        return _check_plan(value)


class TenantUpdate(BaseModel):
    """``PATCH /admin/tenants/{id}``: any of plan, name, email (at least one)."""

    model_config = ConfigDict(extra="forbid")

    plan: str | None = Field(default=None, min_length=1, max_length=64)
    name: str | None = Field(default=None, min_length=1, max_length=200)
    email: str | None = Field(default=None, min_length=3, max_length=254)

    @field_validator("plan")
    @classmethod
    def _plan(cls, value: str | None) -> str | None:
        return None if value is None else _check_plan(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else _check_name(value)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        return None if value is None else _check_email(value)

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if self.plan is None and self.name is None and self.email is None:
            raise ValueError("give at least one of plan, name, email")
        return self


class KeyRotate(BaseModel):
    """``POST /admin/tenants/{id}/keys/{key_id}/rotate``: how long the old key keeps working."""

    model_config = ConfigDict(extra="forbid")

    grace_seconds: int = Field(default=DEFAULT_GRACE_S, ge=0, le=MAX_GRACE_S)


class Tenant(BaseModel):
    model_config = ConfigDict(extra="ignore")

    tenant_id: str
    name: str
    email: str
    plan: str
    status: TenantStatus
    created_at: str
    updated_at: str | None = None
    stripe: StripeState = "pending"
    stripe_customer_id: str | None = None
    stripe_subscription_id: str | None = None
    deleted_at: str | None = None
    retain_until: str | None = None
    # The invoice offboarding billed the last, partial period on (docs/billing.md#offboarding).
    final_invoice_id: str | None = None
    version: int = 0


class TenantPage(BaseModel):
    items: list[Tenant]
    next_cursor: str | None = None


class ApiKey(BaseModel):
    """A key as listed: never the secret, never the hash."""

    model_config = ConfigDict(extra="ignore")

    key_id: str
    tenant_id: str
    prefix: str
    status: KeyStatus
    created_at: str
    last_used_at: str | None = None
    expires_at: str | None = None


class IssuedKey(ApiKey):
    """A key in the one response that creates it: ``secret`` is the full key, shown once."""

    secret: str


class KeyRotation(BaseModel):
    new_key: IssuedKey
    old_key: ApiKey


class KeyRecord(BaseModel):
    """A key as stored: the hash and the 12-character prefix, never the secret."""

    model_config = ConfigDict(extra="ignore")

    lookup_id: str
    tenant_id: str
    prefix: str
    key_hash: str
    status: Literal["active", "revoked"] = "active"
    created_at: str
    last_used_at: str | None = None
    # Epoch seconds when a rotated key stops working (its grace), None: no expiry.
    expires_at_s: int | None = None
    revoked_at: str | None = None
    rotated_to: str | None = None


class ProvisionRecord(BaseModel):
    """One ``POST /admin/tenants`` request's progress, under its Idempotency-Key.

    The worker holding the lease (``lease_owner`` until ``lease_until``, epoch seconds) does the
    steps; each finished step is noted here, so a retry resumes where the last attempt stopped.
    """

    model_config = ConfigDict(extra="ignore")

    idempotency_key: str
    request_hash: str
    tenant_id: str
    state: Literal["in_progress", "completed"] = "in_progress"
    lease_owner: str | None = None
    lease_until: int = 0
    created_at: str
    expires_at: int
    tenant_created: bool = False
    stripe_customer_id: str | None = None
    stripe_subscription_id: str | None = None
    key_id: str | None = None
    completed_at: str | None = None
    # The first answer without its secret, replayed to a retry of the completed request.
    response: str | None = None


class ProvisionResult(BaseModel):
    """What ``POST /admin/tenants`` answers.

    ``api_key`` holds the secret only in the first successful answer (``secret_included``);
    a replay of a completed request returns the same tenant and key id without it.
    """

    tenant: Tenant
    api_key: IssuedKey | ApiKey
    secret_included: bool
    replayed: bool = False
