"""The outbox: every CloudEvent meterbridge must deliver to OpenMeter (and to NATS).

Split by job (docs/flush.md):
- ``records``: the event record, the one atomic fact of acceptance (dedupe key and body);
- ``stream``: the events table's stream as the queue, with per-shard leases and checkpoints;
- ``backlog``: packed items holding what OpenMeter could not take, beyond the stream's 24 h;
- ``recovery``: gaps the stream trimmed before the flush read them, filled from the records;
- ``ledger``: running counters (backlog, dead letters), so no run counts a whole index;
- ``deadletters``: events OpenMeter rejected, and their retry;
- ``republish``: NATS markers, written only when a publish failed;
- ``segments`` and ``shard_leases``: the layout before the stream, drained after an upgrade.
"""

from meterbridge.dal.outbox.deadletters import (
    DEAD,
    DEADLETTER_INDEX,
    dead_letter,
    list_dead_letters,
    retry_dead_letter,
)
from meterbridge.dal.outbox.records import (
    DEDUPE_RETENTION_S,
    EVENT_SK,
    enqueue,
    epoch_s,
    event_pk,
    get_event,
    outbox_item,
    put_ops,
    record,
    record_item,
)
from meterbridge.dal.outbox.republish import (
    REPUBLISH_INDEX,
    mark_pending,
    mark_published,
    republish_page,
)
from meterbridge.dal.outbox.segments import (
    OUTBOX_INDEX,
    OUTBOX_SHARDS,
    SEGMENT_MAX_BYTES,
    SEGMENT_PREFIX,
    SEGMENT_SK,
    segment_events,
)

__all__ = [
    "DEAD",
    "DEADLETTER_INDEX",
    "DEDUPE_RETENTION_S",
    "EVENT_SK",
    "OUTBOX_INDEX",
    "OUTBOX_SHARDS",
    "REPUBLISH_INDEX",
    "SEGMENT_MAX_BYTES",
    "SEGMENT_PREFIX",
    "SEGMENT_SK",
    "dead_letter",
    "enqueue",
    "epoch_s",
    "event_pk",
    "get_event",
    "list_dead_letters",
    "mark_pending",
    "mark_published",
    "outbox_item",
    "put_ops",
    "record",
    "record_item",
    "republish_page",
    "retry_dead_letter",
    "segment_events",
]
