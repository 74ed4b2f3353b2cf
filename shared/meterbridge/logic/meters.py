"""Meters as data: what each event feeds, and the cell writes that keep period values exact.

``feeds`` resolves, for one event, every meter its type feeds: the value at the meter's
``value_property`` and its ``group_by`` dimensions (docs/meters.md). ``cell_ops`` turns a chunk
of stored events into one write per cell (period, meter, group) plus one marker per new
UNIQUE_COUNT value, all in the chunk's transaction (dal.usage.CellOp): the counts are moved
by exactly the events the transaction stores, or not at all.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from meterbridge import jsonpath
from meterbridge.dal import usage as usage_dal
from meterbridge.errors import ValidationFailed
from meterbridge.plans import SUBJECT_KEY, Catalog, Meter, Plan

# DynamoDB numbers hold 38 significant digits; a period's sum of 1,000-event batches of values
# below 10^24 with at most 12 decimals stays within that.
MAX_DIGITS = 36
MAX_ABS = Decimal(10) ** 24
MIN_EXPONENT = -12
NUMERIC = ("SUM", "MAX", "MIN", "LATEST")

Group = tuple[tuple[str, str | None], ...]


@dataclass(frozen=True)
class Feed:
    """One event's contribution to one meter."""

    meter: str
    value: Decimal | None = None  # SUM / MAX / MIN / LATEST
    unique: str | None = None  # UNIQUE_COUNT, by string form
    group: Group | None = None  # the meter's group_by dimensions, when it has any


class FeedError(ValueError):
    def __init__(self, meter: str, path: str, message: str) -> None:
        super().__init__(message)
        self.meter, self.path, self.message = meter, path, message

    def detail(self) -> dict[str, Any]:
        return {
            "loc": ["data", *_loc(self.path)],
            "meter": self.meter,
            "path": self.path,
            "message": self.message,
        }


def _loc(path: str) -> list[str]:
    try:
        return [str(s) for s in jsonpath.parse(path).steps]
    except jsonpath.JSONPathError:  # pragma: no cover - refused at catalogue load
        return []


def _number(raw: Any, meter: str, spec: Meter) -> Decimal:
    path = spec.value_property or ""
    if isinstance(raw, bool) or not isinstance(raw, int | float | str | Decimal):
        raise FeedError(meter, path, f"must be a number for {spec.aggregation}")
    try:
        number = Decimal(raw.strip()) if isinstance(raw, str) else Decimal(str(raw))
    except InvalidOperation:
        raise FeedError(meter, path, f"{raw!r} is not a number") from None
    if not number.is_finite():
        raise FeedError(meter, path, "must be a finite number")
    if number < 0 and not spec.allow_negative:
        raise FeedError(meter, path, "must not be negative (the meter does not allow_negative)")
    number = number.normalize() if number else Decimal(0)
    exponent = number.as_tuple().exponent
    if (
        abs(number) >= MAX_ABS
        or len(number.as_tuple().digits) > MAX_DIGITS
        or (isinstance(exponent, int) and exponent < MIN_EXPONENT)
    ):
        raise FeedError(
            meter, path, f"out of range (below 10^24, at most {-MIN_EXPONENT} decimals)"
        )
    return number


def _string_form(raw: Any) -> str | None:
    if isinstance(raw, str):
        return raw
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return str(raw)
    if isinstance(raw, float) and raw == raw and abs(raw) != float("inf"):
        return str(int(raw)) if raw.is_integer() else repr(raw)
    return None


def feeds(cat: Catalog, event_type: str, data: Mapping[str, Any]) -> list[Feed]:
    """Every meter an event feeds, its value resolved; ``FeedError`` for the first bad one."""
    out: list[Feed] = []
    for name in cat.meters_for_type(event_type):
        spec = cat.meters[name]
        value: Decimal | None = None
        unique: str | None = None
        path = spec.value_path
        if path is not None:
            raw = path.find(data)
            if raw is jsonpath.MISSING or raw is None:
                raise FeedError(name, path.text, f"missing: {spec.aggregation} needs a value")
            if spec.aggregation == "UNIQUE_COUNT":
                unique = _string_form(raw)
                if unique is None:
                    raise FeedError(name, path.text, "must be a string or a number")
            else:
                value = _number(raw, name, spec)
        group: Group | None = None
        dims = spec.group_paths()
        if dims:
            values: list[tuple[str, str | None]] = []
            for dim, dim_path in dims:
                found = dim_path.find(data)
                if found is jsonpath.MISSING or found is None:
                    values.append((dim, None))
                    continue
                text = "true" if found is True else "false" if found is False else None
                text = text or _string_form(found)
                if text is None:
                    raise FeedError(name, dim_path.text, f"group_by {dim}: must be a scalar")
                values.append((dim, text))
            group = tuple(values)
        out.append(Feed(meter=name, value=value, unique=unique, group=group))
    return out


# -- cells --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fed:
    """A stored event's feed, with the period it counts in and its order key for LATEST."""

    period: str
    feed: Feed
    time: str
    event_id: str


Cell = tuple[str, str, Group | None]  # (period, meter, group)


def cells_of(fed: Fed) -> list[Cell]:
    cells: list[Cell] = [(fed.period, fed.feed.meter, None)]
    if fed.feed.group is not None:
        cells.append((fed.period, fed.feed.meter, fed.feed.group))
    return cells


@dataclass
class CellState:
    """What a chunk's retries learnt: cells already as good, markers already there."""

    settled: set[Cell] = field(default_factory=set)
    seen: set[tuple[Cell, str]] = field(default_factory=set)


# Markers this process knows exist (written by it, or refused as existing): a marker lives
# until its period's counters expire, so a known one is left out of later transactions.
_KNOWN_MAX = 200_000
_known: set[tuple[str, str, Cell, str]] = set()
_known_lock = threading.Lock()


def _is_known(tenant_id: str, table: str, cell: Cell, value: str) -> bool:
    return (tenant_id, table, cell, value) in _known


def remember_markers(tenant_id: str, table: str, marks: Iterable[tuple[Cell, str]]) -> None:
    with _known_lock:
        if len(_known) > _KNOWN_MAX:
            _known.clear()
        _known.update((tenant_id, table, cell, value) for cell, value in marks)


def _group_map(group: Group | None) -> dict[str, str | None] | None:
    return None if group is None else dict(group)


class OpsBudget:
    """An upper bound on the cell ops ``cell_ops`` makes for a growing chunk (its cells plus
    one marker per UNIQUE_COUNT value), kept as events are added."""

    def __init__(self) -> None:
        self.cells: set[Cell] = set()
        self.marks: set[tuple[Cell, str]] = set()

    def with_(self, fed: Sequence[Fed]) -> int:
        """The bound if ``fed`` joined the chunk (nothing is added)."""
        cells: set[Cell] = set()
        marks: set[tuple[Cell, str]] = set()
        for f in fed:
            for cell in cells_of(f):
                if cell not in self.cells:
                    cells.add(cell)
                if f.feed.unique is not None and (cell, f.feed.unique) not in self.marks:
                    marks.add((cell, f.feed.unique))
        return len(self.cells) + len(self.marks) + len(cells) + len(marks)

    def add(self, fed: Sequence[Fed]) -> None:
        for f in fed:
            for cell in cells_of(f):
                self.cells.add(cell)
                if f.feed.unique is not None:
                    self.marks.add((cell, f.feed.unique))


def cell_ops(
    tenant_id: str,
    cat: Catalog,
    plan: Plan,
    period: str,
    fed: Sequence[Fed],
    state: CellState,
    table: str,
    expires_at: int,
) -> list[usage_dal.CellOp]:
    """One op per cell (and a marker per new UNIQUE_COUNT value); ``tag`` names what an op
    moves, so a dropped one can be remembered in ``state``."""
    by_cell: dict[Cell, list[Fed]] = {}
    for f in fed:
        for cell in cells_of(f):
            by_cell.setdefault(cell, []).append(f)
    ops: list[usage_dal.CellOp] = []
    for cell, members in by_cell.items():
        counted_in, meter, group = cell
        if cell in state.settled:
            continue
        spec = cat.meters[meter]
        agg = spec.aggregation
        capped = group is None and counted_in == period and cat.hard_capped(plan, meter)
        shard = 0 if capped else random.randrange(usage_dal.SOFT_SHARDS)
        key = usage_dal.cell_key(tenant_id, counted_in, meter, _group_map(group), shard)
        common: dict[str, Any] = {"table": table, "key": key, "group": _group_map(group)}
        if agg in ("COUNT", "SUM"):
            amount: Decimal | int = (
                len(members)
                if agg == "COUNT"
                else sum((m.feed.value or 0 for m in members), Decimal(0))
            )
            cap = plan.limit(meter) if capped else None
            ops.append(usage_dal.CellOp(kind="add", amount=amount, cap=cap, tag=cell, **common))
        elif agg == "UNIQUE_COUNT":
            fresh = sorted(
                {
                    m.feed.unique
                    for m in members
                    if m.feed.unique is not None
                    and (cell, m.feed.unique) not in state.seen
                    and not _is_known(tenant_id, table, cell, m.feed.unique)
                }
            )
            for value in fresh:
                ops.append(
                    usage_dal.CellOp(
                        table=table,
                        key=usage_dal.marker_key(
                            tenant_id, counted_in, meter, _group_map(group), value
                        ),
                        kind="mark",
                        expires_at=expires_at,
                        tag=(cell, value),
                    )
                )
            if fresh:
                ops.append(usage_dal.CellOp(kind="add", amount=len(fresh), tag=cell, **common))
        elif agg in ("MAX", "MIN"):
            values = [m.feed.value for m in members if m.feed.value is not None]
            best = max(values) if agg == "MAX" else min(values)
            ops.append(
                usage_dal.CellOp(
                    kind="max" if agg == "MAX" else "min", amount=best, tag=cell, **common
                )
            )
        else:  # LATEST: the newest (time, id) of the chunk
            newest = max(members, key=lambda m: (m.time, m.event_id))
            ops.append(
                usage_dal.CellOp(
                    kind="latest",
                    amount=newest.feed.value or Decimal(0),
                    time=newest.time,
                    event_id=newest.event_id,
                    tag=cell,
                    **common,
                )
            )
    return ops


def learn(state: CellState, ops: Sequence[usage_dal.CellOp], dropped: Iterable[int]) -> None:
    """Remember what the failed conditions said, so the retry leaves those ops out."""
    for index in dropped:
        op = ops[index]
        if op.kind == "mark":
            state.seen.add(op.tag)
        else:
            state.settled.add(op.tag)


def written_marks(ops: Sequence[usage_dal.CellOp]) -> list[tuple[Cell, str]]:
    return [op.tag for op in ops if op.kind == "mark"]


def within_room(
    tenant_id: str,
    cat: Catalog,
    plan: Plan,
    period: str,
    fed_per_event: Sequence[Sequence[Fed]],
    usage: usage_dal.UsageStore,
) -> list[int]:
    """Indexes of the events that still fit their meters' hard limits, in request order: an
    event that would cross a limit is refused (and so is the rest of that meter's)."""
    room: dict[str, Decimal] = {}
    for feeds_ in fed_per_event:
        for f in feeds_:
            meter = f.feed.meter
            if f.period == period and meter not in room and cat.hard_capped(plan, meter):
                limit = plan.limit(meter) or Decimal(0)
                used = usage.total(tenant_id, period, meter, cat.meters[meter].aggregation)
                room[meter] = limit - used
    keep: list[int] = []
    closed: set[str] = set()
    for index, feeds_ in enumerate(fed_per_event):
        need: dict[str, Decimal] = {}
        for f in feeds_:
            if f.period == period and f.feed.meter in room:
                step = Decimal(1) if f.feed.value is None else f.feed.value
                need[f.feed.meter] = need.get(f.feed.meter, Decimal(0)) + step
        if any(m in closed or room[m] < amount for m, amount in need.items()):
            closed.update(m for m, amount in need.items() if room[m] < amount)
            continue
        for m, amount in need.items():
            room[m] -= amount
        keep.append(index)
    return keep


def with_subject(data: dict[str, Any], subject: str | None) -> dict[str, Any]:
    """The data OpenMeter receives: the tenant's own subject under the reserved key."""
    return data if subject is None else {**data, SUBJECT_KEY: subject}


def resolve_batch(cat: Catalog, parsed: Sequence[tuple[int, Any]], total: int) -> list[list[Feed]]:
    """The feeds of each parsed event (``(index, InboundEvent)``); one bad value fails the
    whole batch with ``400``, details naming the index, the meter and the path."""

    out: list[list[Feed]] = []
    problems: list[dict[str, Any]] = []
    for index, event in parsed:
        if SUBJECT_KEY in event.data:
            problems.append(
                {
                    "index": index,
                    "errors": [
                        {
                            "loc": ["data", SUBJECT_KEY],
                            "message": "reserved: meterbridge puts the event's subject there",
                        }
                    ],
                }
            )
            continue
        try:
            out.append(feeds(cat, event.type, event.data))
        except FeedError as exc:
            problems.append({"index": index, "errors": [exc.detail()]})
    if problems:
        raise ValidationFailed(
            f"{len(problems)} of {total} events do not carry their meters' values; "
            "nothing was stored",
            details=problems,
        )
    return out
