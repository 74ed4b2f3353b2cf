"""Stripe webhook idempotency records in the idempotency table, and the signing secrets.

One item per Stripe event id: ``pk = "STRIPE#<evt>"``, ``sk = "WEBHOOK"``. Its life:

- ``processing``: a worker claimed the event; ``lock_until`` (epoch seconds) bounds the claim,
  so a Lambda that times out mid-event leaves a lock that expires and a redelivery takes over.
- ``done``: every effect is durable; a redelivery is acknowledged without side effects.
- ``unmatched``: no tenant owns the Stripe customer (yet); reconcile or a redelivery may claim
  it again.

``expires_at`` (the table's TTL attribute) keeps records 4 days: longer than Stripe's 3 days of
retries, so no redelivery outlives its record.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from meterbridge.dal import dynamo, outbox
from meterbridge.runtime.lazy import LazyLoader

if TYPE_CHECKING:  # pragma: no cover
    from aws_lambda_powertools.utilities import parameters
else:
    parameters = LazyLoader("parameters", globals(), "aws_lambda_powertools.utilities.parameters")

WEBHOOK_SK = "WEBHOOK"
RECORD_TTL_S = 4 * 24 * 3600
LOCK_S = 60.0  # above the function's 15 s timeout: a live worker never loses its lock

State = Literal["processing", "done", "unmatched"]


def record_pk(event_id: str) -> str:
    return f"STRIPE#{event_id}"


@dataclass(frozen=True)
class Claim:
    """The answer of ``claim``: ``claimed`` with our token, or the record that is there."""

    claimed: bool
    token: str | None = None
    state: str | None = None
    lock_until: float | None = None


def claim(
    table: str, event_id: str, event_type: str, *, lock_s: float = LOCK_S, now: float | None = None
) -> Claim:
    """Take the processing lock for ``event_id`` with one conditional put.

    Succeeds when no record exists, when a previous lock expired, or when the event was left
    unmatched. Otherwise returns the record's state (``done`` or a live ``processing``).
    """
    now = time.time() if now is None else now
    token = uuid.uuid4().hex
    item = {
        "pk": record_pk(event_id),
        "sk": WEBHOOK_SK,
        "state": "processing",
        "event_type": event_type,
        "owner": token,
        "lock_until": round(now + lock_s, 3),
        "claimed_at": round(now, 3),
        "expires_at": int(now) + RECORD_TTL_S,
    }
    try:
        dynamo.client().put_item(
            TableName=table,
            Item=dynamo.serialize(item),
            ConditionExpression=(
                "attribute_not_exists(pk) OR #s = :unmatched"
                " OR (#s = :processing AND lock_until < :now)"
            ),
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues=dynamo.values(
                {":unmatched": "unmatched", ":processing": "processing", ":now": now}
            ),
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        return Claim(claimed=True, token=token)
    except Exception as exc:
        if dynamo.error_code(exc) == "ConditionalCheckFailedException":
            old = getattr(exc, "response", {}).get("Item")
            record = dynamo.deserialize(old) if old else (get(table, event_id) or {})
            return _as_claim(record)
        if dynamo.is_client_error(exc):
            raise dynamo.translate(exc, f"claim {table}") from exc
        raise


def _as_claim(record: dict[str, Any]) -> Claim:
    lock = record.get("lock_until")
    return Claim(
        claimed=False,
        state=record.get("state"),
        lock_until=float(lock) if lock is not None else None,
    )


def get(table: str, event_id: str) -> dict[str, Any] | None:
    return dynamo.get(table, {"pk": record_pk(event_id), "sk": WEBHOOK_SK})


def peek(table: str, event_id: str) -> Claim | None:
    """The record's state as a (not claimed) ``Claim``, or None when there is no record."""
    record = get(table, event_id)
    return _as_claim(record) if record else None


def finish(
    table: str,
    event_id: str,
    event_type: str,
    state: State,
    *,
    tenant_id: str | None = None,
    api_version: str | None = None,
) -> None:
    """Record the end (``done`` or ``unmatched``) once the event's effects are durable.

    An unconditional put (one round trip, no read): if our lock expired and another worker took
    over, both ran the same idempotent steps, so either may record the end.
    """
    now = time.time()
    item = {
        "pk": record_pk(event_id),
        "sk": WEBHOOK_SK,
        "state": state,
        "event_type": event_type,
        "tenant_id": tenant_id,
        "api_version": api_version,
        "finished_at": round(now, 3),
        "expires_at": int(now) + RECORD_TTL_S,
    }
    try:
        dynamo.client().put_item(TableName=table, Item=dynamo.serialize(item))
    except Exception as exc:
        if dynamo.is_client_error(exc):
            raise dynamo.translate(exc, f"finish {table}") from exc
        raise


def release(table: str, event_id: str, token: str) -> None:
    """Drop our lock after a failure, so Stripe's retry need not wait for it to expire."""
    # The lock expires anyway; a failure here must never hide the error that brought us here.
    with contextlib.suppress(Exception):
        dynamo.delete(
            table,
            {"pk": record_pk(event_id), "sk": WEBHOOK_SK},
            condition="#o = :token AND #s = :processing",
            names={"#o": "owner", "#s": "state"},
            vals={":token": token, ":processing": "processing"},
        )


def enqueue_with_update(events_table: str, item: dict[str, Any], update: dict[str, Any]) -> bool:
    """Accept the event record ``item`` into the outbox (only if new, with its segment) and
    apply ``update`` (a guarded ``UpdateItem`` request with plain values) in one
    ``TransactWriteItems``: one round trip instead of two.

    True when both were written. False when the transaction was cancelled for any reason (the
    item exists, the guard refused, a conflicting write): then nothing was written, and the
    caller falls back to the two single conditional writes, which sort out each case.
    """
    tx_update: dict[str, Any] = {
        "TableName": update["TableName"],
        "Key": dynamo.serialize(update["Key"]),
        "UpdateExpression": update["UpdateExpression"],
        "ConditionExpression": update["ConditionExpression"],
        "ExpressionAttributeValues": dynamo.values(update["ExpressionAttributeValues"]),
    }
    if update.get("ExpressionAttributeNames"):
        tx_update["ExpressionAttributeNames"] = dict(update["ExpressionAttributeNames"])
    transact: list[Any] = [*outbox.put_ops(events_table, [item]), {"Update": tx_update}]
    try:
        dynamo.client().transact_write_items(TransactItems=transact)
        return True
    except Exception as exc:
        if dynamo.error_code(exc) == "TransactionCanceledException":
            return False
        if dynamo.is_client_error(exc):
            raise dynamo.translate(exc, f"enqueue with update {events_table}") from exc
        raise


# -- signing secrets -----------------------------------------------------------------------


def webhook_secrets(env_secrets: list[str], parameter_name: str) -> list[str]:
    """The accepted signing secrets: the env list, else the SSM parameter (comma-separated).

    Read through Powertools Parameters with a 5-minute cache, so a rotation in SSM reaches
    every warm Lambda within that bound without a redeploy.
    """
    if env_secrets:
        return list(env_secrets)
    if not parameter_name:
        return []
    raw = parameters.get_parameter(parameter_name, decrypt=True, max_age=300)
    return [part.strip() for part in str(raw or "").split(",") if part.strip()]
