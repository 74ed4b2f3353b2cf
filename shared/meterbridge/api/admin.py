"""The admin API (``/admin/...``): tenants, keys, plans, lifecycle (issue 3); dead letters are in
``admin_deadletters``. Every route requires admin auth (``admin_auth.require_admin``)."""

import asyncio
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Body, Depends, FastAPI, Header, Path, Query, Response

from meterbridge.api import admin_billing, admin_deadletters
from meterbridge.api.admin_auth import require_admin
from meterbridge.api.errors import error_responses, install_error_handlers
from meterbridge.logic.keys import lifecycle as keys_logic
from meterbridge.logic.tenants import queries
from meterbridge.models.tenant import (
    KEY_ID_PATTERN,
    TENANT_ID_PATTERN,
    ApiKey,
    IssuedKey,
    KeyRotate,
    KeyRotation,
    ProvisionResult,
    Tenant,
    TenantCreate,
    TenantPage,
    TenantStatus,
    TenantUpdate,
)
from meterbridge.runtime.lazy import LazyLoader

if TYPE_CHECKING:  # pragma: no cover
    from meterbridge.logic.tenants import lifecycle, provisioning
else:  # Stripe's gateway, the plans, the NATS publisher: not the admin API's cold start
    lifecycle = LazyLoader("lifecycle", globals(), "meterbridge.logic.tenants.lifecycle")
    provisioning = LazyLoader("provisioning", globals(), "meterbridge.logic.tenants.provisioning")

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])

TenantId = Annotated[str, Path(pattern=TENANT_ID_PATTERN, description="t_ and 16 hex digits")]
KeyId = Annotated[str, Path(pattern=KEY_ID_PATTERN, description="the key's lookup id")]


@router.post(
    "/tenants",
    status_code=201,
    response_model=ProvisionResult,
    responses=error_responses(400, 401, 409, 422, 502, 503),
)
async def create_tenant(
    body: TenantCreate,
    response: Response,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> ProvisionResult:
    """Provision tenant, Stripe customer, subscription and first key. 201 with the key's secret
    (shown once); 200 replaying a completed request with the same Idempotency-Key, no secret."""
    result = await provisioning.provision(body, idempotency_key)
    if result.replayed:
        response.status_code = 200
    return result


@router.get("/tenants", response_model=TenantPage, responses=error_responses(400, 401))
async def list_tenants(
    status: TenantStatus | None = None,
    plan: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> TenantPage:
    return await asyncio.to_thread(
        queries.list_tenants, status=status, plan=plan, limit=limit, cursor=cursor
    )


@router.get("/tenants/{tenant_id}", response_model=Tenant, responses=error_responses(400, 401, 404))
async def get_tenant(tenant_id: TenantId) -> Tenant:
    return await asyncio.to_thread(queries.get_tenant, tenant_id)


@router.patch(
    "/tenants/{tenant_id}",
    response_model=Tenant,
    responses=error_responses(400, 401, 404, 409, 502),
)
async def update_tenant(tenant_id: TenantId, change: TenantUpdate) -> Tenant:
    """Change plan (moves the Stripe subscription; quotas follow at once), name or email."""
    return await lifecycle.update(tenant_id, change)


@router.post(
    "/tenants/{tenant_id}/suspend",
    response_model=Tenant,
    responses=error_responses(400, 401, 404, 409),
)
async def suspend_tenant(tenant_id: TenantId) -> Tenant:
    return await lifecycle.suspend(tenant_id)


@router.post(
    "/tenants/{tenant_id}/resume",
    response_model=Tenant,
    responses=error_responses(400, 401, 404, 409),
)
async def resume_tenant(tenant_id: TenantId) -> Tenant:
    return await lifecycle.resume(tenant_id)


@router.delete(
    "/tenants/{tenant_id}",
    response_model=Tenant,
    responses=error_responses(400, 401, 404, 409, 502),
)
async def offboard_tenant(tenant_id: TenantId) -> Tenant:
    """Offboard: revoke keys, cancel the subscription, mark deleted (usage is retained)."""
    return await lifecycle.offboard(tenant_id)


@router.post(
    "/tenants/{tenant_id}/keys",
    status_code=201,
    response_model=IssuedKey,
    responses=error_responses(400, 401, 404, 409),
)
async def issue_key(tenant_id: TenantId) -> IssuedKey:
    """A new key; ``secret`` is in this response only."""
    return await asyncio.to_thread(keys_logic.issue, tenant_id)


@router.get(
    "/tenants/{tenant_id}/keys",
    response_model=list[ApiKey],
    responses=error_responses(400, 401, 404),
)
async def list_keys(tenant_id: TenantId) -> list[ApiKey]:
    return await asyncio.to_thread(keys_logic.list_keys, tenant_id)


@router.post(
    "/tenants/{tenant_id}/keys/{key_id}/revoke",
    response_model=ApiKey,
    responses=error_responses(400, 401, 404),
)
async def revoke_key(tenant_id: TenantId, key_id: KeyId) -> ApiKey:
    return await asyncio.to_thread(keys_logic.revoke, tenant_id, key_id)


@router.post(
    "/tenants/{tenant_id}/keys/{key_id}/rotate",
    status_code=201,
    response_model=KeyRotation,
    responses=error_responses(400, 401, 404, 409),
)
async def rotate_key(
    tenant_id: TenantId, key_id: KeyId, body: Annotated[KeyRotate | None, Body()] = None
) -> KeyRotation:
    """A new key (secret shown once); the old key expires after ``grace_seconds``."""
    grace = (body or KeyRotate()).grace_seconds
    return await asyncio.to_thread(keys_logic.rotate, tenant_id, key_id, grace)


def create_app() -> FastAPI:
    app = FastAPI(title="meterbridge admin API", version="1")
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(admin_deadletters.router)
    app.include_router(admin_billing.router)
    return app
