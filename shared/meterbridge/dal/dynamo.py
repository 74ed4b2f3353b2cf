"""DynamoDB client factory and the conditional-write helpers every idempotent step uses.

``ClientError`` codes become domain exceptions here, raised ``from`` the original; nothing
matches on message strings. botocore honours ``AWS_ENDPOINT_URL``, so the same code talks to
DynamoDB on AWS and to a moto server locally.

The client is created on first use (not at import), with botocore alone
(``meterbridge.runtime.aws``: no boto3, s3transfer or ``multiprocessing``), and tests can reset
it with ``reset_clients()``. The typed wire form is converted here too, with the rules of
boto3's ``TypeSerializer`` and ``TypeDeserializer`` (tests/unit/dal/test_dynamo_codec.py compares).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Set
from decimal import Clamped, Context, Decimal, Inexact, Overflow, Rounded, Underflow
from typing import TYPE_CHECKING, Any

from meterbridge.errors import ConditionFailed, StorageUnavailable
from meterbridge.runtime import aws
from meterbridge.runtime.lazy import LazyLoader
from meterbridge.settings import get_settings

# Items in one TransactWriteItems call: DynamoDB's limit, and the one place it is written.
TRANSACT_MAX = 100

if TYPE_CHECKING:  # pragma: no cover
    import botocore.config as botocore_config
    import botocore.exceptions as botocore_exceptions
    from mypy_boto3_dynamodb.client import DynamoDBClient
else:
    botocore_config = LazyLoader("botocore_config", globals(), "botocore.config")
    botocore_exceptions = LazyLoader("botocore_exceptions", globals(), "botocore.exceptions")

_lock = threading.Lock()
_client: DynamoDBClient | None = None

THROTTLING_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionConflictException",
    }
)


def _config(*, max_pool_connections: int) -> Any:
    """The botocore config of both clients: timeouts and attempts from the settings."""
    settings = get_settings()
    return botocore_config.Config(
        retries={"total_max_attempts": settings.dynamodb_max_attempts, "mode": "adaptive"},
        max_pool_connections=max_pool_connections,
        connect_timeout=settings.dynamodb_connect_timeout_s,
        read_timeout=settings.dynamodb_read_timeout_s,
    )


def client() -> DynamoDBClient:
    """The process-wide low-level DynamoDB client (thread-safe, created once).

    Timeouts and attempts come from the settings (``DYNAMODB_*``).
    """
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                _client = aws.client("dynamodb", config=_config(max_pool_connections=50))
    return _client


_streams_client: Any = None


def streams_client() -> Any:
    """The process-wide DynamoDB Streams client (the flush reads the events table's stream),
    built with the same timeouts and retries as ``client()``."""
    global _streams_client
    if _streams_client is None:
        with _lock:
            if _streams_client is None:
                # Pointed at a DynamoDB endpoint alone (a moto server, DynamoDB Local), the
                # stream is served there too; in AWS neither variable is set.
                endpoint = os.environ.get("AWS_ENDPOINT_URL_DYNAMODB_STREAMS") or os.environ.get(
                    "AWS_ENDPOINT_URL_DYNAMODB"
                )
                _streams_client = aws.client(
                    "dynamodbstreams",
                    endpoint_url=endpoint or None,
                    config=_config(max_pool_connections=20),
                )
    return _streams_client


def reset_clients() -> None:
    """Forget the cached clients (tests change AWS_ENDPOINT_URL between servers)."""
    global _client, _streams_client
    with _lock:
        _client = None
        _streams_client = None


# -- (de)serialisation ---------------------------------------------------------------------

# boto3's DYNAMODB_CONTEXT: DynamoDB's 38 digits, and no silent rounding either way.
_NUMBERS = Context(
    Emin=-128, Emax=126, prec=38, traps=[Clamped, Overflow, Inexact, Rounded, Underflow]
)


def _number(value: Any) -> str:
    if isinstance(value, float):
        raise TypeError("Float types are not supported. Use Decimal types instead.")
    number = str(_NUMBERS.create_decimal(value))
    if number in ("Infinity", "NaN"):
        raise TypeError("Infinity and NaN not supported")
    return number


def _is_number(value: Any) -> bool:
    return isinstance(value, int | Decimal | float) and not isinstance(value, bool)


def _is_binary(value: Any) -> bool:
    return isinstance(value, bytes | bytearray)


def _wire(value: Any) -> dict[str, Any]:
    """One value in DynamoDB's typed wire form (boto3's ``TypeSerializer.serialize``)."""
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if _is_number(value):
        return {"N": _number(value)}
    if isinstance(value, str):
        return {"S": value}
    if _is_binary(value):
        return {"B": bytes(value)}
    if isinstance(value, Mapping):
        return {"M": {k: _wire(v) for k, v in value.items()}}
    if isinstance(value, list | tuple):
        return {"L": [_wire(v) for v in value]}
    if isinstance(value, Set):
        if all(_is_number(v) for v in value):
            return {"NS": [_number(v) for v in value]}
        if all(isinstance(v, str) for v in value):
            return {"SS": list(value)}
        if all(_is_binary(v) for v in value):
            return {"BS": [bytes(v) for v in value]}
    raise TypeError(f'Unsupported type "{type(value)}" for value "{value}"')


def _plain(wire: Mapping[str, Any]) -> Any:
    """One typed wire value as Python (boto3's ``TypeDeserializer.deserialize``: numbers as
    ``Decimal``, binary as ``bytes``)."""
    if not wire:
        raise TypeError("Value must be a nonempty dictionary whose key is a valid dynamodb type.")
    kind, value = next(iter(wire.items()))
    if kind == "NULL":
        return None
    if kind in ("S", "BOOL", "B"):
        return value
    if kind == "N":
        return _NUMBERS.create_decimal(value)
    if kind == "M":
        return {k: _plain(v) for k, v in value.items()}
    if kind == "L":
        return [_plain(v) for v in value]
    if kind == "NS":
        return {_NUMBERS.create_decimal(v) for v in value}
    if kind in ("SS", "BS"):
        return set(value)
    raise TypeError(f"Dynamodb type {kind} is not supported")


def _to_dynamo_value(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {k: _to_dynamo_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_dynamo_value(v) for v in value]
    return value


def _from_dynamo_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_dynamo_value(v) for v in value]
    if isinstance(value, set):
        return {_from_dynamo_value(v) for v in value}
    return value


def serialize(item: Mapping[str, Any]) -> dict[str, Any]:
    """A plain dict to DynamoDB's typed wire form. ``None`` values are dropped."""
    return {k: _wire(_to_dynamo_value(v)) for k, v in item.items() if v is not None}


def deserialize(item: Mapping[str, Any]) -> dict[str, Any]:
    """DynamoDB's typed wire form to a plain dict (numbers as int or float)."""
    return {k: _from_dynamo_value(_plain(v)) for k, v in item.items()}


def deserialize_exact(item: Mapping[str, Any]) -> dict[str, Any]:
    """DynamoDB's typed wire form to a dict with numbers as ``Decimal`` (exact sums), as boto3's
    ``TypeDeserializer`` gives them, without importing boto3."""
    return {k: _plain(v) for k, v in item.items()}


def values(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """Expression attribute values, serialised."""
    return serialize(mapping)


# -- errors --------------------------------------------------------------------------------


def error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def translate(exc: Exception, what: str) -> Exception:
    """A botocore ``ClientError`` as a domain exception (caller raises it ``from exc``)."""
    code = error_code(exc)
    if code == "ConditionalCheckFailedException":
        return ConditionFailed(f"{what}: condition not met")
    if code in THROTTLING_CODES:
        return StorageUnavailable(
            f"{what}: storage is busy, retry the request", headers={"Retry-After": "1"}
        )
    if code == "TransactionCanceledException":
        return ConditionFailed(f"{what}: transaction cancelled")
    return StorageUnavailable(f"{what}: storage error ({code or type(exc).__name__})")


def cancellation_reasons(exc: Exception) -> list[str] | None:
    """The per-item reason codes of a cancelled transaction, in item order (``"None"`` for an
    item that did not fail); ``None`` if ``exc`` is not a cancellation."""
    if error_code(exc) != "TransactionCanceledException":
        return None
    reasons = (getattr(exc, "response", {}) or {}).get("CancellationReasons", [])
    return [str(r.get("Code") or "None") for r in reasons]


def is_client_error(exc: BaseException) -> bool:
    return isinstance(exc, botocore_exceptions.ClientError | botocore_exceptions.BotoCoreError)


def call(method: str, what: str, **kwargs: Any) -> Any:
    """One client call, its ``ClientError`` turned into a domain error (``translate``)."""
    try:
        return getattr(client(), method)(**kwargs)
    except Exception as exc:
        if is_client_error(exc):
            raise translate(exc, what) from exc
        raise


# -- conditional writes --------------------------------------------------------------------


def put_new(table: str, item: Mapping[str, Any], *, key_attr: str = "pk") -> bool:
    """Write ``item`` only if no item with its key exists. True if written, False if it existed.

    The building block of every dedupe: a retry of the same write is a no-op.
    """
    try:
        client().put_item(
            TableName=table,
            Item=serialize(item),
            ConditionExpression="attribute_not_exists(#k)",
            ExpressionAttributeNames={"#k": key_attr},
        )
        return True
    except Exception as exc:
        if error_code(exc) == "ConditionalCheckFailedException":
            return False
        if is_client_error(exc):
            raise translate(exc, f"put {table}") from exc
        raise


def get(table: str, key: Mapping[str, Any], *, consistent: bool = True) -> dict[str, Any] | None:
    """One item by key, or None."""
    resp = call(
        "get_item", f"get {table}", TableName=table, Key=serialize(key), ConsistentRead=consistent
    )
    item = resp.get("Item")
    return deserialize(item) if item else None


def update(
    table: str,
    key: Mapping[str, Any],
    *,
    set_: str,
    condition: str | None = None,
    names: Mapping[str, str] | None = None,
    vals: Mapping[str, Any] | None = None,
    return_new: bool = True,
) -> dict[str, Any] | None:
    """An ``UpdateItem`` with an optional condition; ``ConditionFailed`` when it does not hold."""
    kwargs: dict[str, Any] = {
        "TableName": table,
        "Key": serialize(key),
        "UpdateExpression": set_,
        "ReturnValues": "ALL_NEW" if return_new else "NONE",
    }
    if condition:
        kwargs["ConditionExpression"] = condition
    if names:
        kwargs["ExpressionAttributeNames"] = dict(names)
    if vals:
        kwargs["ExpressionAttributeValues"] = values(vals)
    resp = call("update_item", f"update {table}", **kwargs)
    attrs = resp.get("Attributes")
    return deserialize(attrs) if attrs else None


def update_if(
    table: str,
    key: Mapping[str, Any],
    *,
    set_: str,
    condition: str,
    names: Mapping[str, str] | None = None,
    vals: Mapping[str, Any] | None = None,
) -> bool:
    """A conditional ``UpdateItem``: True if applied, False if the condition did not hold.

    The update twin of ``put_new``, for steps where losing the condition is an answer
    (already done, someone else's lease), not an error.
    """
    try:
        update(table, key, set_=set_, condition=condition, names=names, vals=vals, return_new=False)
        return True
    except ConditionFailed:
        return False


def delete(
    table: str,
    key: Mapping[str, Any],
    *,
    condition: str | None = None,
    names: Mapping[str, str] | None = None,
    vals: Mapping[str, Any] | None = None,
) -> None:
    kwargs: dict[str, Any] = {"TableName": table, "Key": serialize(key)}
    if condition:
        kwargs["ConditionExpression"] = condition
    if names:
        kwargs["ExpressionAttributeNames"] = dict(names)
    if vals:
        kwargs["ExpressionAttributeValues"] = values(vals)
    call("delete_item", f"delete {table}", **kwargs)


def query(
    table: str,
    *,
    key_condition: str,
    vals: Mapping[str, Any],
    names: Mapping[str, str] | None = None,
    index: str | None = None,
    limit: int | None = None,
    start_key: Mapping[str, Any] | None = None,
    filter_: str | None = None,
    forward: bool = True,
    consistent: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """One page of a ``Query``: items and the key to continue from (None at the end)."""
    kwargs: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": key_condition,
        "ExpressionAttributeValues": values(vals),
        "ScanIndexForward": forward,
    }
    if names:
        kwargs["ExpressionAttributeNames"] = dict(names)
    if index:
        kwargs["IndexName"] = index
    elif consistent:
        kwargs["ConsistentRead"] = True
    if limit:
        kwargs["Limit"] = limit
    if start_key:
        kwargs["ExclusiveStartKey"] = serialize(start_key)
    if filter_:
        kwargs["FilterExpression"] = filter_
    resp = call("query", f"query {table}", **kwargs)
    last = resp.get("LastEvaluatedKey")
    return [deserialize(i) for i in resp.get("Items", [])], (deserialize(last) if last else None)
