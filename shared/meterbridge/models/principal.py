"""What authentication reads (a stored key, the tenant's standing) and what it answers.

NamedTuples, not pydantic models: the usage API defines them at every cold start, and builds
them on every uncached request (docs/performance/cold_start.md); the admin API's models are
``models.tenant``.
"""

from typing import NamedTuple


class StoredKey(NamedTuple):
    """A key record as authentication checks it: the hash, never the secret."""

    lookup_id: str
    tenant_id: str
    key_hash: str
    status: str
    # Epoch seconds when the key stops working (a rotated key's grace), None: no expiry.
    expires_at: float | None = None


class TenantStanding(NamedTuple):
    """The tenant fields that decide what its keys may do."""

    tenant_id: str
    plan: str
    status: str


class TenantPrincipal(NamedTuple):
    """Who is calling: the tenant comes from the key, never from the request body.

    Immutable; a NamedTuple rather than a frozen dataclass because it is defined at every cold
    start and costs a sixth as much to define.
    """

    tenant_id: str
    key_id: str
    plan: str
    status: str
    # Epoch seconds when the key stops working (a rotated key's grace), None: no expiry.
    expires_at: float | None = None
