"""Plans as data: ``plans.json`` beside this file (or ``METERBRIDGE_PLANS_FILE``).

Figures come from the pricing table of the reference documents (seed 004). Daily event limits
there are expressed per billing period (calendar month, UTC) as 30 x the daily figure. A limit
of ``null`` means unlimited; ``base_price_cents`` of ``null`` means a custom contract price.
"""

# No ``from __future__ import annotations`` here: pydantic would compile and evaluate every
# field's annotation string when the model class is built, which the cold start pays
# (docs/performance/cold_start.md).
import json
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from meterbridge import jsonpath
from meterbridge.errors import ValidationFailed
from meterbridge.settings import get_settings

PLANS_FILE_DEFAULT = Path(__file__).with_name("plans.json")
CATCH_ALL = "events"
# The tenant's own ``subject`` travels in the event's data under this key (docs/meters.md).
SUBJECT_KEY = "meterbridge_subject"
SUBJECT_DIMENSION = "subject"

Aggregation = Literal["COUNT", "SUM", "MAX", "MIN", "UNIQUE_COUNT", "LATEST"]
# Aggregations a hard limit can hold exactly (a counter with a conditional ADD); a limit on
# another aggregation is soft: alerts and overage only.
HARD_CAPABLE = frozenset({"COUNT", "SUM"})


def _decimal(value: Any) -> Decimal:
    """Money and quantities from an int or a decimal string (or a JSON number read as
    ``Decimal``), never from a float."""
    if isinstance(value, bool | float):
        raise ValueError('write it as an integer or a decimal string, e.g. "0.2"')
    if isinstance(value, int | Decimal):
        number = Decimal(value)
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a decimal number") from None
    else:
        raise ValueError("must be an integer or a decimal string")
    if not number.is_finite():
        raise ValueError("must be finite")
    return number


Money = Annotated[Decimal, BeforeValidator(_decimal)]


def _quantity(value: Any) -> Any:
    return None if value is None else _decimal(value)


Quantity = Annotated[Decimal | None, BeforeValidator(_quantity)]


def round_cents(amount: Decimal) -> int:
    """Half up to the cent, once per meter."""
    return int(amount.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def as_number(value: Decimal | int) -> int | float:
    """A quantity for JSON: exact for integers (the common case)."""
    if isinstance(value, int):
        return value
    return int(value) if value == value.to_integral_value() else float(value)


class Overage(BaseModel):
    """Per started block over the limit: ``price_cents`` for each ``per_units`` units."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    per_units: int = Field(gt=0)
    price_cents: Money = Field(ge=0)

    def cents(self, used: Decimal, limit: Decimal | None) -> Decimal:
        if limit is None or used <= limit:
            return Decimal(0)
        # Round partial blocks up: 1,001 events over a per-1,000 price is two blocks.
        blocks = ((used - limit) / self.per_units).to_integral_value(rounding=ROUND_CEILING)
        return blocks * self.price_cents


class Tier(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    up_to: Quantity
    unit_price_cents: Money = Field(ge=0)


class Tiers(BaseModel):
    """Graduated tiers over the period's whole ``used`` (Stripe's graduated prices)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    tiers: tuple[Tier, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _ascending(self) -> "Tiers":
        bounds = [t.up_to for t in self.tiers]
        if bounds[-1] is not None:
            raise ValueError("the last tier's up_to must be null (no upper bound)")
        finite = [b for b in bounds[:-1] if b is not None]
        if len(finite) != len(bounds) - 1:
            raise ValueError("only the last tier may have up_to null")
        if any(b < 0 for b in finite) or any(a >= b for a, b in pairwise(finite)):
            raise ValueError("tier bounds must be ascending and not negative")
        return self

    def cents(self, used: Decimal, limit: Decimal | None) -> Decimal:
        total, floor = Decimal(0), Decimal(0)
        for tier in self.tiers:
            top = used if tier.up_to is None else min(used, tier.up_to)
            if top > floor:
                total += (top - floor) * tier.unit_price_cents
            if tier.up_to is None or used <= tier.up_to:
                break
            floor = tier.up_to
        return total


PriceRule = Overage | Tiers


class Meter(BaseModel):
    """OpenMeter's meter fields in snake case (docs/meters.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    description: str
    unit: str
    types: tuple[str, ...] = ()
    aggregation: Aggregation = "COUNT"
    value_property: str | None = None
    group_by: dict[str, str] = Field(default_factory=dict)
    allow_negative: bool = False

    @model_validator(mode="after")
    def _paths(self) -> "Meter":
        if self.aggregation == "COUNT":
            if self.value_property is not None:
                raise ValueError("value_property: COUNT reads no value; remove it")
        elif self.value_property is None:
            raise ValueError(f"value_property: required for aggregation {self.aggregation}")
        else:
            try:
                jsonpath.parse(self.value_property)
            except jsonpath.JSONPathError as exc:
                raise ValueError(f"value_property: {exc}") from None
        for dim, path in self.group_by.items():
            if dim == SUBJECT_DIMENSION:
                raise ValueError(f"group_by.{dim}: reserved for the tenant's event subject")
            try:
                jsonpath.parse(path)
            except jsonpath.JSONPathError as exc:
                raise ValueError(f"group_by.{dim}: {exc}") from None
        return self

    @property
    def value_path(self) -> "jsonpath.JSONPath | None":
        return None if self.value_property is None else _path(self.value_property)

    def group_paths(self) -> tuple[tuple[str, "jsonpath.JSONPath"], ...]:
        return tuple((dim, _path(path)) for dim, path in self.group_by.items())


@lru_cache(maxsize=256)
def _path(text: str) -> "jsonpath.JSONPath":
    return jsonpath.parse(text)


class Plan(BaseModel):
    model_config = ConfigDict(frozen=True)
    id: str
    name: str
    base_price_cents: int | None
    # ISO 4217, lower case as Stripe writes it: the invoice items' currency (docs/billing.md).
    currency: str = Field("usd", pattern=r"^[a-z]{3}$")
    stripe_price_id: str | None
    hard_limit: bool
    requests_per_minute: int
    # Open SSE streams per tenant on one streaming task (429 beyond it).
    max_streams: int = Field(10, ge=1)
    storage_gb: int | None
    limits: dict[str, Quantity]
    overage: dict[str, PriceRule] = Field(default_factory=dict)
    storage_overage_cents_per_gb: int | None = None

    def limit(self, meter: str) -> Decimal | None:
        return self.limits.get(meter)

    def overage_cents(self, meter: str, used: Decimal | int) -> int:
        """The charge in cents for ``used`` units of ``meter`` this period, rounded half up
        once (Decimal all the way from the catalogue's decimal strings)."""
        rule = self.overage.get(meter)
        if rule is None:
            return 0
        return round_cents(rule.cents(Decimal(used), self.limit(meter)))


class Catalog(BaseModel):
    model_config = ConfigDict(frozen=True)
    period: str
    meters: dict[str, Meter]
    plans: dict[str, Plan]
    _fed: dict[str, tuple[str, ...]] = PrivateAttr(default_factory=dict)

    def plan(self, plan_id: str) -> Plan:
        try:
            return self.plans[plan_id]
        except KeyError:
            raise ValidationFailed(
                f"unknown plan {plan_id!r}", details={"plans": sorted(self.plans)}
            ) from None

    @model_validator(mode="after")
    def _consistent(self) -> "Catalog":
        catch_all = self.meters.get(CATCH_ALL)
        if catch_all is None:
            raise ValueError(f"meters.{CATCH_ALL}: the catch-all meter is required")
        if catch_all.types or catch_all.aggregation != "COUNT":
            raise ValueError(
                f"meters.{CATCH_ALL}: the catch-all counts every unlisted type (COUNT, no types)"
            )
        for name, meter in self.meters.items():
            if name != CATCH_ALL and not meter.types:
                raise ValueError(f"meters.{name}.types: name the event types it reads")
        for pid, plan in self.plans.items():
            for field in ("limits", "overage"):
                for name in getattr(plan, field):
                    if name not in self.meters:
                        raise ValueError(f"plans.{pid}.{field}.{name}: no such meter")
        return self

    def meters_for_type(self, event_type: str) -> tuple[str, ...]:
        """Every meter an event of ``event_type`` feeds (the catch-all ``events`` unless one
        lists it)."""
        fed = self._fed.get(event_type)
        if fed is None:
            names = tuple(n for n, meter in self.meters.items() if event_type in meter.types)
            fed = self._fed[event_type] = names or (CATCH_ALL,)
        return fed

    def meter_for_type(self, event_type: str) -> str:
        """The first meter an event of ``event_type`` feeds."""
        return self.meters_for_type(event_type)[0]

    def hard_capped(self, plan: Plan, meter: str) -> bool:
        """Whether ``plan``'s limit on ``meter`` refuses events (COUNT and SUM only)."""
        return (
            plan.hard_limit
            and plan.limit(meter) is not None
            and self.meters[meter].aggregation in HARD_CAPABLE
        )

    def plan_for_price(self, price_id: str, lookup_key: str | None = None) -> Plan | None:
        """The plan of a Stripe price: by its lookup key ``meterbridge_<plan id>`` (synced by
        ``meterbridge stripe sync-catalog``), else by ``stripe_price_id``: kept only so events
        about subscriptions made before the catalogue sync still name their plan; provisioning
        never subscribes to it (``adapters.stripe_billing.plan_price``)."""
        if lookup_key and lookup_key.startswith("meterbridge_"):
            found = self.plans.get(lookup_key.removeprefix("meterbridge_"))
            if found is not None:
                return found
        for plan in self.plans.values():
            if plan.stripe_price_id and plan.stripe_price_id == price_id:
                return plan
        return None


def _field(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if not str(p).startswith(("function-", "Overage", "Tiers")))


@lru_cache(maxsize=4)
def _load(path: str) -> Catalog:
    """The catalogue in ``path``; refused with a message naming the field when invalid."""
    try:
        raw = json.loads(Path(path).read_text(), parse_float=Decimal)
        plans = {pid: {"id": pid, **body} for pid, body in raw["plans"].items()}
        return Catalog(period=raw["period"], meters=raw["meters"], plans=plans)
    except ValidationError as exc:
        problems = [
            f"{_field(e['loc'])}: {e['msg'].removeprefix('Value error, ')}".lstrip(": ")
            for e in exc.errors()
        ]
        raise ValidationFailed(
            f"the plan catalogue {Path(path).name} is invalid: " + "; ".join(problems),
            details={"errors": problems},
        ) from None
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValidationFailed(
            f"the plan catalogue {Path(path).name} is invalid: {exc!r}"
        ) from None


def catalog() -> Catalog:
    """The plan catalogue in force (cached per file)."""

    return _load(_resolved(get_settings().plans_file))


@lru_cache(maxsize=8)
def _resolved(name: str) -> str:
    return str(resolve_plans_file(name))


def resolve_plans_file(name: str) -> Path:
    """``METERBRIDGE_PLANS_FILE``: empty for the built-in catalogue; a relative name is a file
    of the package (so one shipped in the Lambda layer, the ``PlansFile`` parameter)."""
    if not name:
        return PLANS_FILE_DEFAULT
    path = Path(name)
    return path if path.is_absolute() else PLANS_FILE_DEFAULT.parent / path
