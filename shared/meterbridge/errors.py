"""Domain exceptions and the one place that maps them to HTTP.

Every error body is ``{"error": {"code", "message", "details"?}}`` (DESIGN.md).
"""

from __future__ import annotations

from typing import Any


class MeterbridgeError(Exception):
    """Base of every domain error. ``status`` and ``code`` define the HTTP answer."""

    status: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


class ValidationFailed(MeterbridgeError):
    status, code = 400, "invalid_request"


class InvalidSignature(MeterbridgeError):
    status, code = 400, "invalid_signature"


class Unauthorized(MeterbridgeError):
    status, code = 401, "unauthorized"


class TenantSuspended(MeterbridgeError):
    status, code = 403, "tenant_suspended"


class NotFound(MeterbridgeError):
    status, code = 404, "not_found"


class Conflict(MeterbridgeError):
    status, code = 409, "conflict"


class IdempotencyMismatch(MeterbridgeError):
    status, code = 422, "idempotency_key_reused"


class PayloadTooLarge(MeterbridgeError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(MeterbridgeError):
    status, code = 415, "unsupported_media_type"


class QuotaExceeded(MeterbridgeError):
    status, code = 429, "quota_exceeded"


class RateLimited(MeterbridgeError):
    status, code = 429, "rate_limited"


class UpstreamUnavailable(MeterbridgeError):
    """A dependency (Stripe, OpenMeter) failed; the caller may retry the same request."""

    status, code = 502, "upstream_unavailable"


class PriceMissing(MeterbridgeError):
    """A priced plan has no Stripe price under its lookup key: the catalogue was never synced
    (``meterbridge stripe sync-catalog``). Nothing billable is created until it is."""

    status, code = 409, "stripe_price_missing"


class StorageUnavailable(MeterbridgeError):
    """DynamoDB throttled or failed; nothing was accepted, the caller retries."""

    status, code = 503, "storage_unavailable"


class ConditionFailed(MeterbridgeError):
    """A conditional write lost: the item exists or is in another state. Internal signal."""

    status, code = 409, "conflict"


# What a lost conditional write means, in the domain's words: the DAL raises these ``from`` the
# ConditionFailed it caught (dal/tenants.py, dal/keys.py, dal/provisioning.py).


class TenantChanged(Conflict):
    """The tenant profile is no longer at the version it was read at."""


class KeyChanged(Conflict):
    """An API key is no longer in the state the write expected (revoked, expiring sooner)."""


class LeaseLost(Conflict):
    """A provisioning step ran without the lease: another worker took the request over."""


def to_http(exc: MeterbridgeError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, JSON body and headers for a domain error."""
    return exc.status, exc.body(), dict(exc.headers)


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """An error body for errors raised outside the domain (framework validation, 404 routes)."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}
