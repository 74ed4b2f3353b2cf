"""Ingest's writes to the events table: new events with their counters, atomically.

Budget (issue 4): at most 30 DynamoDB requests per 1,000 new events. One
``TransactWriteItems`` per chunk stores up to 100 items: each event record conditional on the
event being new (``outbox.put_ops``; its INSERT in the table's stream queues it for OpenMeter)
and the chunk's counter updates, so an event is stored, queued and counted in one atomic step
or not at all. Nothing more on the happy path (docs/flush.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from meterbridge.dal import dynamo, outbox
from meterbridge.dal.dynamo import TRANSACT_MAX
from meterbridge.dal.usage import CellOp
from meterbridge.errors import StorageUnavailable
from meterbridge.models.outbox import Accepted, Record


@dataclass
class CounterUpdate:
    """``ADD used :n`` on one counter item, conditional on a cap when the plan has a hard limit."""

    table: str
    key: dict[str, str]
    amount: int
    cap: int | None = None

    def transact_item(self) -> dict[str, Any]:
        update: dict[str, Any] = {
            "TableName": self.table,
            "Key": dynamo.serialize(self.key),
            "UpdateExpression": "ADD #u :n",
            "ExpressionAttributeNames": {"#u": "used"},
            "ExpressionAttributeValues": dynamo.serialize({":n": self.amount}),
        }
        if self.cap is not None:
            update["ConditionExpression"] = "attribute_not_exists(#u) OR #u <= :room"
            update["ExpressionAttributeValues"] = dynamo.serialize(
                {":n": self.amount, ":room": self.cap - self.amount}
            )
        return {"Update": update}


def write_chunk(
    table: str, records: Sequence[Record], counters: Sequence[CounterUpdate | CellOp]
) -> Accepted:
    """Store ``records`` (new events only) and apply ``counters``, in one transaction.

    On cancellation, reports which records were stored meanwhile by a concurrent request
    (their positions) and whether a capped counter refused the amount; nothing of the chunk is
    written then.
    """
    items = [outbox.record_item(r) for r in records]
    # Reasons come back in this order: the events, then the counters.
    transact: list[Any] = outbox.put_ops(table, items) + [c.transact_item() for c in counters]
    if len(transact) > TRANSACT_MAX:
        raise ValueError("a chunk holds at most 100 items with its counters")
    try:
        dynamo.client().transact_write_items(TransactItems=transact)
        return Accepted(written=True)
    except Exception as exc:
        reasons = dynamo.cancellation_reasons(exc)
        if reasons is None:
            if dynamo.is_client_error(exc):
                raise dynamo.translate(exc, "store events") from exc
            raise
        outcome = Accepted(written=False)
        failed = False
        for index, code in enumerate(reasons):
            if code == "ConditionalCheckFailed":
                if index < len(items):
                    outcome.duplicates.add(index)
                else:
                    op = counters[index - len(items)]
                    if isinstance(op, CellOp) and op.droppable:
                        outcome.dropped.add(index - len(items))
                    else:
                        outcome.over_cap = True
            elif code == "TransactionConflict":
                outcome.conflict = True
            elif code != "None":
                failed = True
        if failed and not (
            outcome.duplicates or outcome.over_cap or outcome.conflict or outcome.dropped
        ):
            # Throttling or another storage failure: nothing written, the client retries.
            raise StorageUnavailable(
                "storage is busy, retry the request", headers={"Retry-After": "1"}
            ) from exc
        return outcome
