"""Recovery windows: events the stream trimmed before the flush read them (docs/flush.md).

A stream keeps 24 hours. If no flush ran for longer, a shard's checkpoint points at records
the stream no longer holds (``TrimmedDataAccessException``): the events accepted between the
checkpoint's last committed record and the oldest record the stream still has were never
delivered. Their event records stay 45 days, so the flush fills the gap from them.

One item per gap in the idempotency table, ``FLUSH#<events table>#RECOVERY``/``<shard>#<lo>``:
``lo`` and ``hi`` (``accepted_at`` bounds, margins included), ``cursor`` (the ``Scan``'s last
evaluated key, JSON; absent before the first page), ``scanned`` and ``recovered`` counts, and a
lease (``lease_owner``, ``lease_until``) like the stream checkpoints'. It is put before the
checkpoint moves past the gap (conditional on being new, so a killed run that finds the same
trim again puts nothing), advanced only after OpenMeter's 2xx (or the backlog's park) for a
page, and deleted when the ``Scan`` is done. Only the flush writes it.

Why a ``Scan``: the records are in no index (an index on ``accepted_at`` would be a second
write for every event, forever, to serve a failure that needs a day without a flush). A Scan
reads the whole table once per gap, eventually consistent (0.5 RRU per 4 KB, about 16 records a
unit), filtered on the server to the window.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from meterbridge.dal import dynamo
from meterbridge.dal.outbox.records import EVENT_SK
from meterbridge.dal.outbox.stream import Queued
from meterbridge.errors import ConditionFailed

_FREE = "attribute_not_exists(lease_until) OR lease_until < :now OR lease_owner = :me"


@dataclass(frozen=True)
class Window:
    pk: str
    sk: str
    shard: str
    lo: str
    hi: str
    cursor: dict[str, Any] | None
    scanned: int
    recovered: int
    opened_at: str


def _pk(events_table: str) -> str:
    return f"FLUSH#{events_table}#RECOVERY"


def _window(item: dict[str, Any]) -> Window:
    cursor = item.get("cursor")
    return Window(
        pk=str(item["pk"]),
        sk=str(item["sk"]),
        shard=str(item.get("shard", "")),
        lo=str(item.get("lo", "")),
        hi=str(item.get("hi", "")),
        cursor=json.loads(str(cursor)) if cursor else None,
        scanned=int(item.get("scanned", 0)),
        recovered=int(item.get("recovered", 0)),
        opened_at=str(item.get("opened_at", "")),
    )


def open_window(
    lease_table: str, events_table: str, shard_id: str, *, lo: str, hi: str, opened_at: str
) -> bool:
    """Record the gap ``[lo, hi]`` of ``shard_id``; False if it was recorded already."""
    return dynamo.put_new(
        lease_table,
        {
            "pk": _pk(events_table),
            "sk": f"{shard_id}#{lo}",
            "shard": shard_id,
            "lo": lo,
            "hi": hi,
            "scanned": 0,
            "recovered": 0,
            "opened_at": opened_at,
        },
    )


def windows(lease_table: str, events_table: str) -> list[Window]:
    """Every open gap (one strongly consistent ``Query``, 1 RRU when there is none: a window
    the same run just opened is seen, so its result and ``meterbridge status`` are true)."""
    found: list[Window] = []
    start: dict[str, Any] | None = None
    while True:
        items, start = dynamo.query(
            lease_table,
            key_condition="pk = :p",
            vals={":p": _pk(events_table)},
            start_key=start,
            consistent=True,
        )
        found.extend(_window(i) for i in items)
        if start is None:
            return found


def lease(lease_table: str, window: Window, *, owner: str, now_ms: int, lease_ms: int) -> bool:
    return dynamo.update_if(
        lease_table,
        {"pk": window.pk, "sk": window.sk},
        set_="SET lease_owner = :me, lease_until = :until",
        condition=f"attribute_exists(pk) AND ({_FREE})",
        vals={":me": owner, ":until": now_ms + lease_ms, ":now": now_ms},
    )


def release(lease_table: str, window: Window, *, owner: str) -> None:
    dynamo.update_if(
        lease_table,
        {"pk": window.pk, "sk": window.sk},
        set_="REMOVE lease_owner, lease_until",
        condition="lease_owner = :me",
        vals={":me": owner},
    )


def advance(
    lease_table: str,
    window: Window,
    *,
    cursor: dict[str, Any],
    scanned: int,
    recovered: int,
    owner: str,
    now_ms: int,
    lease_ms: int,
) -> bool:
    """Move the progress checkpoint past a page whose events OpenMeter took (or that were
    parked), and renew the lease. False if the lease passed to another run."""
    return dynamo.update_if(
        lease_table,
        {"pk": window.pk, "sk": window.sk},
        set_="SET #c = :c, lease_until = :until ADD scanned :s, recovered :r",
        condition="lease_owner = :me",
        names={"#c": "cursor"},
        vals={
            ":c": json.dumps(cursor, sort_keys=True),
            ":s": scanned,
            ":r": recovered,
            ":me": owner,
            ":until": now_ms + lease_ms,
        },
    )


def close(lease_table: str, window: Window, *, owner: str) -> bool:
    """The Scan is done: the gap is filled. False if the lease passed to another run."""
    try:
        dynamo.delete(
            lease_table,
            {"pk": window.pk, "sk": window.sk},
            condition="lease_owner = :me",
            vals={":me": owner},
        )
    except ConditionFailed:
        return False
    return True


def scan_page(
    events_table: str, window: Window, cursor: dict[str, Any] | None, *, limit: int
) -> tuple[list[Queued], dict[str, Any] | None, int]:
    """One page of the ``Scan``: the window's undelivered event records of this layout (not
    dead-lettered, not the segment layout's), the key to go on from (None: done), and how many
    items the page read."""
    kwargs: dict[str, Any] = {
        "TableName": events_table,
        "Limit": limit,
        "FilterExpression": (
            "sk = :e AND accepted_at BETWEEN :lo AND :hi "
            "AND attribute_not_exists(#seg) AND attribute_not_exists(dead)"
        ),
        "ProjectionExpression": "pk, sk, #ev, accepted_at, tenant_id, kind",
        "ExpressionAttributeNames": {"#seg": "segment", "#ev": "event"},
        "ExpressionAttributeValues": dynamo.values(
            {":e": EVENT_SK, ":lo": window.lo, ":hi": window.hi}
        ),
    }
    if cursor:
        kwargs["ExclusiveStartKey"] = dynamo.serialize(cursor)
    resp = dynamo.call("scan", f"recovery scan {events_table}", **kwargs)
    found = [dynamo.deserialize(raw) for raw in resp.get("Items", [])]
    queued = [
        Queued(
            pk=str(item["pk"]),
            event=str(item["event"]),
            accepted_at=str(item.get("accepted_at", "")),
            tenant_id=item.get("tenant_id"),
            kind=item.get("kind"),
            requeued=False,
        )
        for item in found
        if "event" in item
    ]
    last = resp.get("LastEvaluatedKey")
    return queued, (dynamo.deserialize(last) if last else None), int(resp.get("ScannedCount", 0))
