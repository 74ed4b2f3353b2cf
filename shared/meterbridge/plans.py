"""Plans as data: ``plans.json`` beside this file (or ``METERBRIDGE_PLANS_FILE``).

Figures come from the pricing table of the reference documents (seed 004). Daily event limits
there are expressed per billing period (calendar month, UTC) as 30 x the daily figure. A limit
of ``null`` means unlimited; ``base_price_cents`` of ``null`` means a custom contract price.
"""

# No ``from __future__ import annotations`` here: pydantic would compile and evaluate every
# field's annotation string when the model class is built, which the cold start pays
# (docs/performance/cold_start.md).
import json
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from meterbridge.errors import ValidationFailed

PLANS_FILE_DEFAULT = Path(__file__).with_name("plans.json")


class Overage(BaseModel):
    model_config = ConfigDict(frozen=True)
    per_units: int = Field(gt=0)
    price_cents: int = Field(ge=0)


class Meter(BaseModel):
    model_config = ConfigDict(frozen=True)
    description: str
    unit: str
    types: tuple[str, ...] = ()


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
    limits: dict[str, int | None]
    overage: dict[str, Overage] = Field(default_factory=dict)
    storage_overage_cents_per_gb: int | None = None

    def limit(self, meter: str) -> int | None:
        return self.limits.get(meter)

    def overage_cents(self, meter: str, used: int) -> int:
        """The overage charge in cents for ``used`` units of ``meter`` this period."""
        limit = self.limit(meter)
        rule = self.overage.get(meter)
        if limit is None or rule is None or used <= limit:
            return 0
        over = used - limit
        # Round partial blocks up: 1,001 events over a per-1,000 price is two blocks.
        blocks = -(-over // rule.per_units)
        return blocks * rule.price_cents


class Catalog(BaseModel):
    model_config = ConfigDict(frozen=True)
    period: str
    meters: dict[str, Meter]
    plans: dict[str, Plan]

    def plan(self, plan_id: str) -> Plan:
        try:
            return self.plans[plan_id]
        except KeyError:
            raise ValidationFailed(
                f"unknown plan {plan_id!r}", details={"plans": sorted(self.plans)}
            ) from None

    def meter_for_type(self, event_type: str) -> str:
        """The meter an event of ``event_type`` counts toward (``events`` unless listed)."""
        for name, meter in self.meters.items():
            if event_type in meter.types:
                return name
        return "events"

    def plan_for_price(self, price_id: str, lookup_key: str | None = None) -> Plan | None:
        """The plan of a Stripe price: by its lookup key ``meterbridge_<plan id>`` (synced by
        ``meterbridge stripe sync-catalog``), else by ``stripe_price_id``."""
        if lookup_key and lookup_key.startswith("meterbridge_"):
            found = self.plans.get(lookup_key.removeprefix("meterbridge_"))
            if found is not None:
                return found
        for plan in self.plans.values():
            if plan.stripe_price_id and plan.stripe_price_id == price_id:
                return plan
        return None


@lru_cache(maxsize=4)
def _load(path: str) -> Catalog:
    raw = json.loads(Path(path).read_text())
    plans = {pid: {"id": pid, **body} for pid, body in raw["plans"].items()}
    return Catalog(period=raw["period"], meters=raw["meters"], plans=plans)


def catalog() -> Catalog:
    """The plan catalogue in force (cached per file)."""
    from meterbridge.settings import get_settings

    return _load(get_settings().plans_file or str(PLANS_FILE_DEFAULT))
