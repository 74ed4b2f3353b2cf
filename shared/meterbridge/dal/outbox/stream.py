"""The events table's stream (``NEW_IMAGE``) as the outbox queue, with per-shard checkpoints.

Every accepted event's record is one INSERT in the stream; the flush reads the stream shard by
shard and delivers. Per stream shard, one item in the idempotency table,
``FLUSH#<events table>#STREAM#<shard id>``/``CHECKPOINT``, is both the shard's lease (one run
reads a shard at a time) and its checkpoint: ``seq``, the last sequence number whose record
OpenMeter acknowledged (or that was parked in the backlog), committed only after that, and
``done`` once a closed shard was read to its end. Lineage: a shard is read only after its
parent is done (or trimmed out of the stream), so an event's records keep their order and a
split never skips a parent's tail.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from meterbridge.dal import dynamo
from meterbridge.dal.outbox.records import EVENT_SK
from meterbridge.errors import StorageUnavailable

CHECKPOINT_SK = "CHECKPOINT"
REQUEUE_SK = "REQUEUE"
# A checkpoint outlives its shard (24 h of retention after it closes) with margin; every lease
# renews it, so an idle open shard's checkpoint never expires.
_CHECKPOINT_TTL_S = 7 * 24 * 3600

_arns: dict[str, str] = {}
_arns_lock = threading.Lock()


@dataclass(frozen=True)
class Shard:
    shard_id: str
    parent: str | None
    closed: bool


@dataclass
class Checkpoint:
    seq: str | None
    done: bool
    # ``accepted_at`` of the last committed event (or the stream time of the last committed
    # record): where a recovery window starts if the stream trims past ``seq``.
    committed_at: str | None = None


class CheckpointTrimmed(Exception):
    """The checkpoint is older than the stream's 24 hours (``TrimmedDataAccessException``)."""


@dataclass(frozen=True)
class Queued:
    """One event the stream queued for OpenMeter: its record's key, JSON and acceptance time."""

    pk: str
    event: str
    accepted_at: str
    tenant_id: str | None
    kind: str | None
    requeued: bool


def _raise(exc: Exception, what: str) -> None:
    if dynamo.is_client_error(exc):
        raise dynamo.translate(exc, what) from exc
    raise exc


def stream_arn(table: str) -> str | None:
    """The table's latest stream ARN (``DescribeTable``, once a process), or None if the table
    has no stream."""
    with _arns_lock:
        if table in _arns:
            return _arns[table]
    resp = dynamo.call("describe_table", f"describe {table}", TableName=table)
    arn = resp.get("Table", {}).get("LatestStreamArn")
    spec = resp.get("Table", {}).get("StreamSpecification") or {}
    if not arn or not spec.get("StreamEnabled", True):
        return None
    with _arns_lock:
        _arns[table] = str(arn)
    return str(arn)


def forget_arns() -> None:
    with _arns_lock:
        _arns.clear()


def shards(arn: str) -> list[Shard]:
    """Every shard the stream still holds (paged ``DescribeStream``)."""
    found: list[Shard] = []
    start: str | None = None
    while True:
        kwargs: dict[str, Any] = {"StreamArn": arn}
        if start:
            kwargs["ExclusiveStartShardId"] = start
        try:
            desc = dynamo.streams_client().describe_stream(**kwargs)["StreamDescription"]
        except Exception as exc:
            _raise(exc, "describe stream")
            raise
        for raw in desc.get("Shards", []):
            ending = raw.get("SequenceNumberRange", {}).get("EndingSequenceNumber")
            found.append(Shard(raw["ShardId"], raw.get("ParentShardId"), ending is not None))
        start = desc.get("LastEvaluatedShardId")
        if not start:
            return found


def in_lineage_order(found: Iterable[Shard], done: Mapping[str, bool]) -> list[Shard]:
    """The shards that may be read now, parents before children: a shard whose parent is
    still in the stream and not ``done`` waits (its parent's tail comes first)."""
    present = {s.shard_id for s in found}
    ready = [s for s in found if not done.get(s.shard_id)]
    return [s for s in ready if s.parent is None or s.parent not in present or done.get(s.parent)]


def _checkpoint_key(events_table: str, shard_id: str) -> dict[str, str]:
    return {"pk": f"FLUSH#{events_table}#STREAM#{shard_id}", "sk": CHECKPOINT_SK}


def done_shards(lease_table: str, events_table: str, found: Iterable[Shard]) -> dict[str, bool]:
    """Which shards' checkpoints say ``done`` (one ``BatchGetItem`` per 100 shards)."""
    ids = [s.shard_id for s in found]
    done: dict[str, bool] = {}
    for start in range(0, len(ids), 100):
        request: dict[str, Any] = {
            lease_table: {
                "Keys": [
                    dynamo.serialize(_checkpoint_key(events_table, i))
                    for i in ids[start : start + 100]
                ],
                "ProjectionExpression": "pk, done",
            }
        }
        while request:
            try:
                resp = dynamo.client().batch_get_item(RequestItems=request)
            except Exception as exc:
                _raise(exc, f"read checkpoints {lease_table}")
                raise
            for raw in resp.get("Responses", {}).get(lease_table, []):
                item = dynamo.deserialize(raw)
                done[str(item["pk"]).rsplit("#", 1)[1]] = bool(item.get("done"))
            request = resp.get("UnprocessedKeys") or {}
    return done


def acquire(
    lease_table: str, events_table: str, shard_id: str, *, owner: str, now_ms: int, lease_ms: int
) -> Checkpoint | None:
    """Lease the shard (free, expired or ours) and read its checkpoint; None if another run
    holds it."""
    try:
        resp = dynamo.client().update_item(
            TableName=lease_table,
            Key=dynamo.serialize(_checkpoint_key(events_table, shard_id)),
            UpdateExpression="SET lease_owner = :me, lease_until = :until, expires_at = :exp",
            ConditionExpression=(
                "attribute_not_exists(pk) OR attribute_not_exists(lease_until) "
                "OR lease_until < :now OR lease_owner = :me"
            ),
            ExpressionAttributeValues=dynamo.values(
                {
                    ":me": owner,
                    ":until": now_ms + lease_ms,
                    ":now": now_ms,
                    ":exp": now_ms // 1000 + _CHECKPOINT_TTL_S,
                }
            ),
            ReturnValues="ALL_NEW",
        )
    except Exception as exc:
        if dynamo.error_code(exc) == "ConditionalCheckFailedException":
            return None
        _raise(exc, f"lease stream shard {lease_table}")
        raise
    item = dynamo.deserialize(resp.get("Attributes", {}))
    seq = item.get("seq")
    at = item.get("committed_at")
    return Checkpoint(
        seq=str(seq) if seq else None,
        done=bool(item.get("done")),
        committed_at=str(at) if at else None,
    )


def checkpoint(lease_table: str, events_table: str, shard_id: str) -> Checkpoint | None:
    """A shard's checkpoint as stored (one ``GetItem``), or None."""
    item = dynamo.get(lease_table, _checkpoint_key(events_table, shard_id))
    if item is None:
        return None
    at = item.get("committed_at")
    return Checkpoint(
        seq=str(item["seq"]) if item.get("seq") else None,
        done=bool(item.get("done")),
        committed_at=str(at) if at else None,
    )


def mark_trimmed(lease_table: str, events_table: str, shard_id: str) -> None:
    """A shard gone from the stream with its tail unread: its gap has a recovery window, so it
    counts as ``done`` (its children may be read)."""
    dynamo.update_if(
        lease_table,
        _checkpoint_key(events_table, shard_id),
        set_="SET done = :t",
        condition="attribute_exists(pk)",
        vals={":t": True},
    )


def commit(
    lease_table: str,
    events_table: str,
    shard_id: str,
    *,
    owner: str,
    seq: str | None,
    done: bool = False,
    committed_at: str | None = None,
    reset: bool = False,
    now_ms: int,
    lease_ms: int,
) -> bool:
    """Move the checkpoint to ``seq`` (and renew the lease); ``reset`` forgets a trimmed
    ``seq`` (the next read starts at the stream's oldest record). False if the lease was lost:
    the new holder re-reads from the old checkpoint, and OpenMeter dedupes what both sent."""
    parts = ["lease_until = :until"]
    vals: dict[str, Any] = {":me": owner, ":until": now_ms + lease_ms}
    if seq is not None:
        parts.append("seq = :seq")
        vals[":seq"] = seq
    if committed_at:
        parts.append("committed_at = :at")
        vals[":at"] = committed_at
    if done:
        parts.append("done = :done")
        vals[":done"] = True
    return dynamo.update_if(
        lease_table,
        _checkpoint_key(events_table, shard_id),
        set_="SET " + ", ".join(parts) + (" REMOVE seq" if reset else ""),
        condition="lease_owner = :me",
        vals=vals,
    )


def release(lease_table: str, events_table: str, shard_id: str, *, owner: str) -> None:
    with contextlib.suppress(StorageUnavailable):  # the lease simply expires
        dynamo.update_if(
            lease_table,
            _checkpoint_key(events_table, shard_id),
            set_="REMOVE lease_owner, lease_until",
            condition="lease_owner = :me",
            vals={":me": owner},
        )


def iterator(arn: str, shard_id: str, seq: str | None, *, strict: bool = False) -> str | None:
    """A shard iterator just after ``seq`` (the start of the shard when None). A trimmed
    ``seq`` raises ``CheckpointTrimmed`` when ``strict`` (the flush opens a recovery window);
    otherwise the iterator starts at the stream's oldest record."""
    kwargs: dict[str, Any] = {"StreamArn": arn, "ShardId": shard_id}
    if seq:
        kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=seq)
    else:
        kwargs["ShardIteratorType"] = "TRIM_HORIZON"
    try:
        return dynamo.streams_client().get_shard_iterator(**kwargs).get("ShardIterator")
    except Exception as exc:
        if dynamo.error_code(exc) == "TrimmedDataAccessException" and seq:
            # The checkpoint is older than the stream's 24 h: only possible if no flush ran
            # for a day. The records themselves stay 45 days (``recovery``).
            if strict:
                raise CheckpointTrimmed(shard_id) from exc
            return iterator(arn, shard_id, None)
        if dynamo.error_code(exc) == "ResourceNotFoundException":
            return None
        _raise(exc, "stream iterator")
        raise


def read(it: str, *, limit: int = 1000) -> tuple[list[dict[str, Any]], str | None]:
    """One ``GetRecords`` call: the raw records and the next iterator (None: shard closed and
    read to its end)."""
    try:
        resp = dynamo.streams_client().get_records(ShardIterator=it, Limit=limit)
    except Exception as exc:
        _raise(exc, "read stream")
        raise
    return list(resp.get("Records", [])), resp.get("NextShardIterator")


def queued(record: Mapping[str, Any]) -> list[Queued]:
    """What a stream record queues for OpenMeter: an INSERT of an event record written by this
    layout, or of a dead letter's requeue item; nothing else (updates, TTL deletes, and the
    segment layout's records, which their segments deliver)."""
    if record.get("eventName") != "INSERT":
        return []
    image = record.get("dynamodb", {}).get("NewImage")
    if not image:
        return []
    item = dynamo.deserialize(image)
    sk = item.get("sk")
    if sk == EVENT_SK and "segment" not in item and "event" in item:
        return [
            Queued(
                pk=str(item["pk"]),
                event=str(item["event"]),
                accepted_at=str(item.get("accepted_at", "")),
                tenant_id=item.get("tenant_id"),
                kind=item.get("kind"),
                requeued=False,
            )
        ]
    if sk == REQUEUE_SK and "events" in item:
        return [
            Queued(
                pk=str(item.get("record", "")),
                event=line,
                accepted_at=str(item.get("accepted_at", "")),
                tenant_id=item.get("tenant_id"),
                kind=item.get("kind"),
                requeued=True,
            )
            for line in str(item["events"]).split("\n")
        ]
    return []


def oldest_time(arn: str, shard_id: str) -> str | None:
    """When the oldest record the shard still holds was accepted (its event's ``accepted_at``,
    else its stream time, RFC 3339), or None if the shard holds none (one ``GetRecords``)."""
    it = iterator(arn, shard_id, None)
    if it is None:
        return None
    records, _ = read(it, limit=1)
    if not records:
        return None
    return record_time(records[0])


def record_time(record: Mapping[str, Any]) -> str:
    """A record's time on the ``accepted_at`` scale: its event's, else its stream time."""
    for q in queued(record):
        if q.accepted_at:
            return q.accepted_at

    created = record.get("dynamodb", {}).get("ApproximateCreationDateTime")
    stamp = created.timestamp() if hasattr(created, "timestamp") else float(created or 0)
    at = datetime.fromtimestamp(stamp, UTC).isoformat(timespec="milliseconds")
    return at.replace("+00:00", "Z")


def sequence(record: Mapping[str, Any]) -> str:
    return str(record["dynamodb"]["SequenceNumber"])


def unread(
    lease_table: str, events_table: str, *, max_calls: int = 200
) -> tuple[int, Queued | None]:
    """Events the stream holds past the checkpoints: how many (read up to ``max_calls``
    ``GetRecords``; streams read units, no table reads) and the one accepted first."""
    arn = stream_arn(events_table)
    if arn is None:
        return 0, None
    found = shards(arn)
    done = done_shards(lease_table, events_table, found)
    count, calls = 0, 0
    oldest: Queued | None = None
    for shard in found:
        if done.get(shard.shard_id):
            continue
        item = dynamo.get(lease_table, _checkpoint_key(events_table, shard.shard_id)) or {}
        it = iterator(arn, shard.shard_id, str(item["seq"]) if item.get("seq") else None)
        while it is not None and calls < max_calls:
            records, it = read(it)
            calls += 1
            if not records:
                break
            for q in (q for r in records for q in queued(r)):
                count += 1
                if q.accepted_at and (oldest is None or q.accepted_at < oldest.accepted_at):
                    oldest = q
    return count, oldest


def age_s(record: Mapping[str, Any], *, now_s: float) -> float:
    """How long the stream has held ``record`` (its ``ApproximateCreationDateTime``)."""
    created = record.get("dynamodb", {}).get("ApproximateCreationDateTime")
    if created is None:
        return 0.0
    stamp = created.timestamp() if hasattr(created, "timestamp") else float(created)
    return max(0.0, now_s - stamp)
