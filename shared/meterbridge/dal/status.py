"""Reads (and one write) behind ``meterbridge status`` and the flush's backlog gauges.

- The outbox backlog: the stream past the flush's checkpoints, the backlog items (oldest
  first per key) and the ledger's running counters in the idempotency table, and the segment
  layout's ``outbox`` index while an upgraded stack still holds segments (docs/flush.md).
- Dead letters: the ledger's running counter (one ``GetItem``).
- The last flush result: one item ``FLUSH#last``/``RESULT`` in the idempotency table, written
  (overwritten) at the end of every flush run by ``put_last_flush``.
- Usage this period: the usage table's sharded counters ``<tenant>#<period>#<meter>``/
  ``SHARD#<n>``. There is no index by period, so this is a filtered ``Scan`` (operators run it
  by hand; it reads the whole table: docs/observability.md).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, NoReturn

from meterbridge.dal import dynamo, outbox
from meterbridge.dal.outbox import backlog, ledger, recovery, segments, stream

LAST_FLUSH_KEY = {"pk": "FLUSH#last", "sk": "RESULT"}
# Counter shards' numeric attribute (issue 4 writes it with ``ADD``).
COUNTER_ATTRS = ("count", "used", "value")


def _raise(exc: Exception, what: str) -> NoReturn:
    if dynamo.is_client_error(exc):
        raise dynamo.translate(exc, what) from exc
    raise exc


def oldest_pending(table: str, lease_table: str | None = None) -> dict[str, Any] | None:
    """The pending event accepted first (``accepted_at``, ``tenant_id`` when known), or None:
    the oldest of the backlog items, the stream past its checkpoints, and the segment layout
    (docs/flush.md). No index is read whole."""
    candidates: list[dict[str, Any]] = []
    legacy = segments.oldest_pending(table)
    if legacy is not None:
        candidates.append({k: legacy.get(k) for k in ("pk", "accepted_at", "tenant_id")})
    if lease_table is not None:
        parked = backlog.oldest(lease_table, table)
        if parked:
            candidates.append({"pk": None, "accepted_at": parked, "tenant_id": None})
        _, streamed = stream.unread(lease_table, table, max_calls=1)
        if streamed is not None:
            candidates.append(
                {
                    "pk": streamed.pk,
                    "accepted_at": streamed.accepted_at,
                    "tenant_id": streamed.tenant_id,
                }
            )
    found = [c for c in candidates if c.get("accepted_at")]
    return min(found, key=lambda c: str(c["accepted_at"])) if found else None


def count_pending(table: str, lease_table: str | None = None) -> int:
    """Events waiting: the ledger's backlog, the stream past its checkpoints (read with
    streams units), and the segment layout's pending segments while any are left."""
    total = 0
    if any(segments.any_pending(table, str(s)) for s in range(segments.OUTBOX_SHARDS)):
        total += segments.count_pending(table)
    if lease_table is not None:
        total += ledger.read(lease_table, table)["backlog"]
        total += stream.unread(lease_table, table)[0]
    return total


def recovery_windows(table: str, lease_table: str | None = None) -> list[recovery.Window]:
    """The stream gaps the flush is filling from the event records (one ``Query``)."""
    if lease_table is None:
        return []
    return recovery.windows(lease_table, table)


def count_dead_letters(table: str, lease_table: str | None = None) -> int:
    """Dead letters not retried: the ledger's running counter once seeded (one read), else
    one count of the ``deadletters`` index (before the first flush after an upgrade)."""
    if lease_table is not None:
        counts = ledger.read(lease_table, table)
        if counts["dead_seeded"]:
            return int(counts["dead"])
    return outbox.deadletters.count_dead_letters(table)


def get_last_flush(table: str) -> dict[str, Any] | None:
    item = dynamo.get(table, LAST_FLUSH_KEY)
    if item is None:
        return None
    return {k: v for k, v in item.items() if k not in LAST_FLUSH_KEY}


def put_last_flush(table: str, result: dict[str, Any]) -> None:
    """Overwrite the last flush result (unconditional: the latest run wins)."""
    try:
        dynamo.client().put_item(
            TableName=table, Item=dynamo.serialize({**result, **LAST_FLUSH_KEY})
        )
    except Exception as exc:  # noqa: BLE001 - translated or re-raised by _raise
        _raise(exc, f"put {table}")


def usage_totals(table: str, period: str) -> dict[tuple[str, str], int]:
    """``{(tenant_id, meter): used}`` summed over the counter shards of ``period``."""
    totals: dict[tuple[str, str], int] = defaultdict(int)
    kwargs: dict[str, Any] = {
        "TableName": table,
        "FilterExpression": "begins_with(sk, :shard) AND contains(pk, :period)",
        "ExpressionAttributeValues": dynamo.values({":shard": "SHARD#", ":period": f"#{period}#"}),
    }
    while True:
        try:
            resp = dynamo.client().scan(**kwargs)
        except Exception as exc:  # noqa: BLE001 - translated or re-raised by _raise
            _raise(exc, f"scan {table}")
        for raw in resp.get("Items", []):
            item = dynamo.deserialize(raw)
            parts = str(item["pk"]).split("#")
            # Rate windows (RATE#...) share the SHARD# sort keys but not the key shape.
            if len(parts) != 3 or parts[0] == "RATE" or parts[1] != period:
                continue
            value = next((item[a] for a in COUNTER_ATTRS if isinstance(item.get(a), int)), 0)
            totals[(parts[0], parts[2])] += value
        last = resp.get("LastEvaluatedKey")
        if not last:
            return dict(totals)
        kwargs["ExclusiveStartKey"] = last
