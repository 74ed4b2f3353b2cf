"""The usage API's models: inbound CloudEvents, the ingest answer, the usage summary."""

# No ``from __future__ import annotations`` here: pydantic would compile and evaluate every
# field's annotation string when the model class is built, which the cold start pays
# (docs/performance/cold_start.md).
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_EVENT_ID = 128
MAX_DATASCHEMA = 2048


class InboundEvent(BaseModel):
    """One CloudEvent as a tenant sends it. ``source`` is the server's, so it is ignored."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    id: str = Field(min_length=1, max_length=MAX_EVENT_ID)
    type: str = Field(min_length=1, max_length=256)
    time: datetime | None = None
    subject: str | None = Field(default=None, min_length=1, max_length=256)
    data: dict[str, Any] = Field(default_factory=dict)
    specversion: Literal["1.0"] | None = None
    datacontenttype: Literal["application/json"] | None = None
    dataschema: str | None = Field(default=None, min_length=1, max_length=MAX_DATASCHEMA)
    source: str | None = Field(default=None, description="Ignored: set by the server")

    @field_validator("id", "type", "subject")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        if value is not None and not value.isprintable():
            raise ValueError("must contain printable characters only")
        return value

    @field_validator("dataschema")
    @classmethod
    def _uri(cls, value: str | None) -> str | None:
        # CloudEvents 1.0: an absolute URI (OpenMeter's spec: ``format: uri``), carried as sent.
        if value is not None and (
            not value.isprintable() or " " in value or not urlsplit(value).scheme
        ):
            raise ValueError("must be an absolute URI")
        return value

    @field_validator("time")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("must be RFC 3339 with a time zone offset (e.g. Z)")
        return value


# InboundEvent's JSON schema for the OpenAPI document (the ingest route reads its body raw, so
# FastAPI cannot derive it). Written out rather than built with ``model_json_schema()`` at
# import, which the usage API's cold start would pay (about 2 ms); a unit test keeps the two
# equal (tests/unit/project/test_cold_start_imports.py).
INBOUND_EVENT_SCHEMA: dict[str, Any] = {
    "additionalProperties": False,
    "description": (
        "One CloudEvent as a tenant sends it. ``source`` is the server's, so it is ignored."
    ),
    "properties": {
        "id": {"maxLength": MAX_EVENT_ID, "minLength": 1, "title": "Id", "type": "string"},
        "type": {"maxLength": 256, "minLength": 1, "title": "Type", "type": "string"},
        "time": {
            "anyOf": [{"format": "date-time", "type": "string"}, {"type": "null"}],
            "default": None,
            "title": "Time",
        },
        "subject": {
            "anyOf": [{"maxLength": 256, "minLength": 1, "type": "string"}, {"type": "null"}],
            "default": None,
            "title": "Subject",
        },
        "data": {"additionalProperties": True, "title": "Data", "type": "object"},
        "specversion": {
            "anyOf": [{"const": "1.0", "type": "string"}, {"type": "null"}],
            "default": None,
            "title": "Specversion",
        },
        "datacontenttype": {
            "anyOf": [{"const": "application/json", "type": "string"}, {"type": "null"}],
            "default": None,
            "title": "Datacontenttype",
        },
        "dataschema": {
            "anyOf": [
                {"maxLength": MAX_DATASCHEMA, "minLength": 1, "type": "string"},
                {"type": "null"},
            ],
            "default": None,
            "title": "Dataschema",
        },
        "source": {
            "anyOf": [{"type": "string"}, {"type": "null"}],
            "default": None,
            "description": "Ignored: set by the server",
            "title": "Source",
        },
    },
    "required": ["id", "type"],
    "title": "InboundEvent",
    "type": "object",
}


class IngestResult(BaseModel):
    accepted: int = Field(description="Events stored and counted by this request")
    duplicates: int = Field(description="Events already stored (same id), counted once before")


class GroupUsage(BaseModel):
    group_by: dict[str, str | None] = Field(
        description="The group's dimension values (null: the event did not carry it)"
    )
    used: int | float


class PartUsage(BaseModel):
    """One part of a period whose plan changed in it (docs/billing.md#plan-changes)."""

    plan: str
    start: datetime
    end: datetime
    used: int | float
    limit: int | float | None = Field(description="The plan's limit times the part's share")
    overage: int | float


class MeterUsage(BaseModel):
    meter: str
    aggregation: str = Field(description="COUNT, SUM, MAX, MIN, UNIQUE_COUNT or LATEST")
    unit: str
    used: int | float = Field(description="The meter's aggregated value this period")
    limit: int | float | None = Field(
        description="Units included in the plan this period; null = unlimited"
    )
    remaining: int | float | None
    overage: int | float = Field(
        description="Units above the limit (paid plans accept and bill them)"
    )
    overage_charge_cents: int = Field(
        description="The meter's charge this period: its price rule, rounded half up once"
    )
    dimensions: list[str] = Field(
        default_factory=list, description="The meter's group_by dimensions (for ?group_by=)"
    )
    groups: list[GroupUsage] | None = Field(
        default=None, description="With ?group_by=: the meter's value per group, largest first"
    )
    parts: list[PartUsage] | None = Field(
        default=None,
        description="When the plan changed in the period: each part, priced with its plan",
    )


class InvoiceLine(BaseModel):
    meter: str
    description: str
    amount_cents: int


class NextInvoice(BaseModel):
    """What the invoice closing this period will carry (docs/billing.md)."""

    base_price_cents: int | None
    lines: list[InvoiceLine]
    total_cents: int | None = Field(description="Base price plus lines; null for custom plans")


class PeriodUsage(BaseModel):
    period: str = Field(description="Billing period, YYYY-MM (calendar month, UTC)")
    start: datetime
    end: datetime
    plan: str
    hard_limit: bool
    base_price_cents: int | None
    meters: list[MeterUsage]
    estimated_charge_cents: int | None = Field(
        description="Base price plus overage; null for custom-priced plans"
    )
    # The current period only (billing's overage lines, priced as above).
    next_invoice: NextInvoice | None = None


class UsageReport(BaseModel):
    tenant_id: str
    current: PeriodUsage
    periods: list[PeriodUsage] = Field(
        default_factory=list, description="Requested past periods (?from=&to=), oldest first"
    )


class HistoryRow(BaseModel):
    window_start: datetime
    window_end: datetime
    value: int | float
    group_by: dict[str, str | None]


class UsageHistory(BaseModel):
    meter: str
    from_: datetime = Field(alias="from", serialization_alias="from")
    to: datetime
    window_size: str
    data: list[HistoryRow]
