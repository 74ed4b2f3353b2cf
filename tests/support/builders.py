"""Builders for test data that go through the product's own DAL (no hand-made items)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from meterbridge.dal import keys as keys_dal
from meterbridge.dal import tenants as tenants_dal
from meterbridge.logic.keys import format as keys
from meterbridge.settings import get_settings


def make_tenant(plan: str = "basic", status: str = "active", name: str = "Acme") -> tuple[str, str]:
    """A tenant with one active API key; returns (tenant_id, raw_key)."""
    settings = get_settings()
    tenant_id = "t_" + uuid.uuid4().hex[:16]
    now = datetime.now(UTC).isoformat()
    tenants_dal.put_tenant(
        settings.tenants_table,
        {
            "tenant_id": tenant_id,
            "name": name,
            "email": f"{tenant_id}@example.com",
            "plan": plan,
            "status": status,
            "created_at": now,
        },
    )
    raw, lookup = keys.generate("test")
    keys_dal.put_key(
        settings.tenants_table,
        {
            "lookup_id": lookup,
            "tenant_id": tenant_id,
            "prefix": raw[:12],
            "key_hash": keys.hash_key(raw, settings.key_pepper),
            "status": "active",
            "created_at": now,
        },
    )
    return tenant_id, raw


def scan_items(table: str) -> list[dict[str, Any]]:
    """Every item of ``table`` (a consistent scan, all pages), as plain dicts."""
    from meterbridge.dal import dynamo

    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        resp = dynamo.client().scan(**kwargs)
        items.extend(dynamo.deserialize(i) for i in resp.get("Items", []))
        if "LastEvaluatedKey" not in resp:
            return items
        kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]


def events_table_items(table: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The events table's event records and outbox segments (a consistent scan)."""
    from meterbridge.dal import outbox

    items = scan_items(table)
    records = [i for i in items if i["sk"] == outbox.EVENT_SK]
    return records, [i for i in items if i["sk"] == outbox.SEGMENT_SK]


def stream_queued(table: str) -> list[Any]:
    """Every event the table's stream queued for OpenMeter, from the start of each shard
    (``stream.Queued``: the record's key, its JSON, ...), in stream order."""
    from meterbridge.dal.outbox import stream

    arn = stream.stream_arn(table)
    assert arn is not None, "the events table has no stream"
    queued: list[Any] = []
    for shard in stream.shards(arn):
        it = stream.iterator(arn, shard.shard_id, None)
        while it is not None:
            records, it = stream.read(it)
            if not records:
                break
            queued.extend(q for r in records for q in stream.queued(r))
    return queued


def event_records(table: str) -> list[dict[str, Any]]:
    """The events table's event records (one per accepted CloudEvent)."""
    return events_table_items(table)[0]
