"""The usage API (``/v1/events``, ``/v1/usage``): tenant key auth, ingest, usage query."""

from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response

from meterbridge.api.admission import TenantAdmission
from meterbridge.api.blocking import run_blocking, run_shared
from meterbridge.api.errors import error_responses, install_error_handlers
from meterbridge.api.tenant_auth import require_tenant
from meterbridge.errors import PayloadTooLarge, UnsupportedMediaType
from meterbridge.logic import history, ingest, rate, usage_report
from meterbridge.logic.ingest import parse, publish, quota
from meterbridge.models.cloudevent import CloudEvent
from meterbridge.models.principal import TenantPrincipal
from meterbridge.models.usage import (
    INBOUND_EVENT_SCHEMA,
    IngestResult,
    UsageHistory,
    UsageReport,
)
from meterbridge.plans import Plan, catalog
from meterbridge.settings import Settings, get_settings

router = APIRouter(prefix="/v1", tags=["usage"])

MEDIA_TYPES = (
    "application/json",
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
)
# The body is read raw (size and media type are checked first), so its schema is given here;
# InboundEvent has no nested models, so its JSON schema is self-contained.
_BODY_SCHEMA: dict[str, Any] = {
    "oneOf": [
        INBOUND_EVENT_SCHEMA,
        {
            "type": "array",
            "items": INBOUND_EVENT_SCHEMA,
            "minItems": 1,
            "maxItems": parse.MAX_EVENTS,
        },
    ]
}


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


@router.post(
    "/events",
    status_code=202,
    response_model=IngestResult,
    responses=error_responses(400, 401, 403, 413, 415, 429, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {media: {"schema": _BODY_SCHEMA} for media in MEDIA_TYPES},
        }
    },
)
async def ingest_events(request: Request) -> Response:
    """Accept one CloudEvent or a batch of up to 1,000 (1 MB, 64 KB per event).

    The tenant is the key's; ``source`` is set by the server. The batch is validated whole:
    one invalid event and nothing is stored. Events already stored (same ``id``) are reported
    in ``duplicates`` and counted once.
    """
    # Called here rather than as a dependency, and the answer serialized here rather than by
    # the response model: FastAPI's dependency solving and response validation were a third
    # of the route's own cost (docs/performance/ingest.md). The OpenAPI schema is unchanged.
    principal = await require_tenant(request)
    if _media_type(request) not in MEDIA_TYPES:
        raise UnsupportedMediaType(
            "Content-Type must be one of " + ", ".join(MEDIA_TYPES),
            details={"content_type": request.headers.get("content-type")},
        )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > parse.MAX_BODY_BYTES:
        raise PayloadTooLarge(
            f"the request body is over {parse.MAX_BODY_BYTES} bytes",
            details={"limit_bytes": parse.MAX_BODY_BYTES},
        )
    raw = await request.body()
    settings = get_settings()
    result, stored, alerts = await run_blocking(
        request, _ingest_request, principal, raw, settings, datetime.now(UTC)
    )
    await publish.publish(principal.tenant_id, stored, alerts, settings)
    return Response(result.model_dump_json(), status_code=202, media_type="application/json")


@router.get(
    "/usage", response_model=UsageReport, responses=error_responses(400, 401, 403, 429, 503)
)
async def get_usage(
    request: Request,
    principal: Annotated[TenantPrincipal, Depends(require_tenant)],
    from_: Annotated[
        str | None,
        Query(
            alias="from",
            pattern=r"^\d{4}-(0[1-9]|1[0-2])$",
            description="First past period, YYYY-MM",
        ),
    ] = None,
    to: Annotated[
        str | None,
        Query(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="Last past period, YYYY-MM"),
    ] = None,
    group_by: Annotated[
        list[str] | None,
        Query(
            max_length=8,
            description="Dimension(s) to list each grouped meter's current-period groups by",
        ),
    ] = None,
) -> UsageReport:
    """This period per meter (aggregation, unit, used, limit, remaining, overage and its
    charge) and the estimated charge; ``?group_by=model`` adds each grouped meter's groups."""
    plan = catalog().plan(principal.plan)
    groups = tuple(dict.fromkeys(group_by or ()))
    # One thread hop for the blocking work: the read budget's window, then the report. The
    # tenant's identical reads waiting at its gate share the report; each takes its own slot.
    return await run_shared(
        request,
        (principal.plan, from_, to, groups),
        partial(_read_slot, principal, plan),
        partial(_usage_request, principal, from_, to, groups),
    )


def _read_slot(principal: TenantPrincipal, plan: Plan) -> None:
    """One request in the read budget's window (``RateLimited`` when it is full)."""
    rate.take_shared(principal.tenant_id, plan, get_settings(), datetime.now(UTC), "read")


def _usage_request(
    principal: TenantPrincipal,
    first: str | None,
    last: str | None,
    group_by: tuple[str, ...],
) -> UsageReport:
    return usage_report.usage_report(
        principal.tenant_id, principal.plan, first=first, last=last, group_by=group_by
    )


@router.get(
    "/usage/query",
    response_model=UsageHistory,
    responses=error_responses(400, 401, 403, 503),
)
async def get_usage_history(
    request: Request,
    principal: Annotated[TenantPrincipal, Depends(require_tenant)],
    meter: Annotated[str, Query(min_length=1, max_length=64, description="The meter's key")],
    from_: Annotated[datetime, Query(alias="from", description="RFC 3339, inclusive")],
    to: Annotated[datetime, Query(description="RFC 3339, exclusive")],
    window_size: Annotated[
        Literal["MINUTE", "HOUR", "DAY", "MONTH"], Query(description="Window of each row")
    ] = "DAY",
    group_by: Annotated[
        list[str] | None,
        Query(max_length=8, description="Dimension(s) of the meter, or subject (repeatable)"),
    ] = None,
) -> UsageHistory:
    """The meter's history from OpenMeter, for the key's tenant only: one row per window
    (and group). ``503 history_unavailable`` when OpenMeter is disabled or down."""
    answer = await run_blocking(
        request,
        history.query,
        principal.tenant_id,
        meter,
        from_,
        to,
        window_size,
        tuple(dict.fromkeys(group_by or ())),
    )
    return UsageHistory.model_validate(answer)


def _ingest_request(
    principal: TenantPrincipal, raw: bytes, settings: Settings, now: datetime
) -> tuple[IngestResult, list[CloudEvent], list[CloudEvent]]:
    """Rate check, parse and ingest: one thread hop for all the blocking work of a request."""
    quota.check_rate(principal.tenant_id, catalog().plan(principal.plan), settings, now)
    raw_events = parse.parse_body(raw)
    return ingest.ingest(
        principal.tenant_id, principal.plan, raw_events, settings=settings, now=now
    )


def create_app() -> FastAPI:
    app = FastAPI(title="meterbridge usage API", version="1")
    install_error_handlers(app)
    # Outermost: a tenant out of tokens is refused before its body is read or routed.
    app.add_middleware(TenantAdmission)
    app.include_router(router)
    return app
