"""moto's server, with transactions that snapshot only the items they touch.

moto 5.2 backs up a whole table with ``copy.deepcopy`` once per item of every
``TransactWriteItems`` call (100 full-table copies for a 100-item transaction), so a
transaction's cost grows with the table: 2.7 s for 100 items on a 1,000-item table here.
DynamoDB itself does no such thing. This wrapper keeps moto's own transaction code and
semantics and replaces only the backup: it records the touched items before the call and puts
them back if the transaction is cancelled.

moto's ``Query`` also sorts the whole table before it picks the matching items (and then sorts
those again): 1 s per query of a 10,000-item table here, where DynamoDB reads only the matches.
The wrapper skips that first sort during a query, and hands an index query only the items of
the partition it asks for (grouped once per state of the tables, not by comparing every item
of the table at each query); moto's own code still filters, sorts and pages them. It also
measures an item's size once instead of once per attribute (the same 400 KB limit).

DynamoDB Streams: ``GetRecords`` is encoded directly (moto's shape walker takes seconds a
page), moto's search of every response body for an XML ``<RequestId>`` is skipped on bodies
without one (JSON), and the stream trims on request as AWS trims after 24 hours. Two lookups
moto repeats on every request (its service packages on disk, a handler's method names) are
made once.

    python -m meterbridge_dev.fakes.moto_server -H 127.0.0.1 -p 5000

It also takes injected faults, for failure tests: ``POST /_meterbridge/faults`` with
``{"throttle_ratio": 0.3, "seconds": 10, "seed": 1}`` answers that share of DynamoDB calls
with ``ProvisionedThroughputExceededException`` (as DynamoDB does under throttling) for that
long; ``DELETE /_meterbridge/faults`` ends it early; ``GET`` reports how many were throttled.
"""

from __future__ import annotations

import copy
import json
import sys
import threading
from typing import Any


def install() -> None:
    import moto.dynamodb.models as models
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table

    if getattr(DynamoDBBackend, "_meterbridge_patched", False):
        return

    class _NoTableCopy:
        """``copy`` for moto's models module: tables are not copied, everything else is."""

        def __getattr__(self, name: str) -> Any:
            return getattr(copy, name)

        @staticmethod
        def deepcopy(obj: Any, memo: dict[int, Any] | None = None) -> Any:
            if isinstance(obj, Table):
                return obj
            return copy.deepcopy(obj, memo)

    original = DynamoDBBackend.transact_write_items

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        tables = dict(self.tables)
        snapshots: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
        for entry in transact_items[:100]:
            _, op = next(iter(entry.items()))
            table_name = op.get("TableName")
            if not table_name or table_name not in self.tables:
                continue
            table = self.tables[table_name]
            if "Item" in op:
                key = {table.hash_key_attr: op["Item"].get(table.hash_key_attr)}
                if table.range_key_attr:
                    key[table.range_key_attr] = op["Item"].get(table.range_key_attr)
            else:
                key = op.get("Key") or {}
            try:
                current = self.get_item(table_name, key)
            except Exception:  # noqa: BLE001, S112 - moto's own code reports a malformed key
                continue
            snapshots.append(
                (table_name, key, current.to_json()["Attributes"] if current else None)
            )
        # DynamoDB's stream shows only committed writes: what a cancelled transaction (and
        # its restore below) appended to a table's stream is taken back too.
        streamed = {
            name: len(table.stream_shard.items)
            for name, table in self.tables.items()
            if getattr(table, "stream_shard", None) is not None
        }
        try:
            original(self, transact_items)
        except BaseException:
            self.tables.update(tables)
            for table_name, key, attrs in reversed(snapshots):
                if attrs is None:
                    self.delete_item(table_name, key)
                else:
                    self.put_item(table_name, attrs)
            for name, length in streamed.items():
                shard = self.tables[name].stream_shard
                if shard is not None:
                    del shard.items[length:]
            raise

    models.copy = _NoTableCopy()  # type: ignore[assignment]
    _unsorted_scan_for_queries(Table)
    _linear_item_size_check()
    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    for name in _WRITE_METHODS:
        method = getattr(DynamoDBBackend, name, None)
        if method is not None:
            setattr(DynamoDBBackend, name, _counted(method))
    _request_id_only_where_present()
    _lookups_once()
    _plain_dynamodb_results()
    # moto's server is threaded and its writes are not atomic with each other: a transaction
    # could read, fail and restore while another request writes the same item. DynamoDB
    # serialises conflicting writes (TransactionConflict); one lock over moto's writes does too.
    # Reads take it as well: moto applies a transaction item by item, and a reader must never
    # see one half-applied (a cancelled transaction's items are taken back afterwards; DynamoDB
    # never shows uncommitted writes).
    lock = threading.RLock()
    for name in (
        "put_item",
        "update_item",
        "delete_item",
        "transact_write_items",
        "batch_write_item",
        "get_item",
        "query",
        "scan",
        "batch_get_item",
        "transact_get_items",
    ):
        method = getattr(DynamoDBBackend, name, None)
        if method is not None:
            setattr(DynamoDBBackend, name, _serialised(method, lock))
    # Stream reads too: a reader must not see a transaction's records before it commits.
    from moto.dynamodbstreams.models import DynamoDBStreamsBackend

    _fast_get_records()
    _stream_trim()

    for name in ("get_records", "get_shard_iterator", "describe_stream"):
        setattr(
            DynamoDBStreamsBackend,
            name,
            _serialised(getattr(DynamoDBStreamsBackend, name), lock),
        )
    DynamoDBBackend._meterbridge_patched = True  # type: ignore[attr-defined]


def _linear_item_size_check() -> None:
    """moto builds an item attribute by attribute, re-measuring the whole item at each one
    (quadratic: a fifth of its CPU on an ingest transaction). Measure once, same limit."""
    from moto.dynamodb.exceptions import ItemSizeTooLarge
    from moto.dynamodb.models import dynamo_type
    from moto.dynamodb.models.utilities import bytesize

    def __init__(self: Any, hash_key: Any, range_key: Any, attrs: dict[str, Any]) -> None:
        self.hash_key = hash_key
        self.range_key = range_key
        typed = {key: dynamo_type.DynamoType(value) for key, value in attrs.items()}
        # The same measure and limit as ``LimitedSizeDict.__setitem__`` applies per attribute.
        if sum(bytesize(key) + value.size() for key, value in typed.items()) > 405000:
            raise ItemSizeTooLarge
        self.attrs = dynamo_type.LimitedSizeDict()
        dict.update(self.attrs, typed)

    dynamo_type.Item.__init__ = __init__  # type: ignore[method-assign]


# How many writes the tables have taken (any table, any write API): the partitions an index
# query reads are grouped once per value of it.
_WRITES = [0]
_WRITE_METHODS = (
    "put_item",
    "update_item",
    "delete_item",
    "transact_write_items",
    "batch_write_item",
    "execute_statement",
    "execute_transaction",
    "batch_execute_statement",
)


def _counted(method: Any) -> Any:
    import functools

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        finally:
            _WRITES[0] += 1

    return wrapper


def _unsorted_scan_for_queries(table_class: Any) -> None:
    """``Table.query`` filters ``all_items()`` and sorts the matches itself (by the index's or
    the table's keys, a total order), so the full sort ``all_items`` does first is skipped; an
    index query also gets only the items whose index partition key matches (moto compares
    every item of the table again; DynamoDB reads only the partition)."""
    import functools

    local = threading.local()
    sorted_all_items = table_class.all_items
    original_query = table_class.query

    def unsorted(self: Any) -> list[Any]:
        if self.range_key_attr:
            return [item for group in self.items.values() for item in group.values()]
        return list(self.items.values())

    def all_items(self: Any) -> list[Any]:
        if not getattr(local, "in_query", False):
            return sorted_all_items(self)  # type: ignore[no-any-return]
        wanted = getattr(local, "partition", None)
        if wanted is None:
            return unsorted(self)
        name, kind, value = wanted
        # The items of every partition of ``name``, in the table's order, grouped once per
        # state of the tables (any write starts a new one): an index query then reads its
        # partition, as DynamoDB does, instead of every item of the table.
        cached: tuple[int, dict[str, dict[tuple[str, Any], list[Any]]]] | None
        cached = getattr(self, "_meterbridge_partitions", None)
        if cached is None or cached[0] != _WRITES[0]:
            cached = (_WRITES[0], {})
            self._meterbridge_partitions = cached
        groups = cached[1].get(name)
        if groups is None:
            groups = {}
            for item in unsorted(self):
                found = item.attrs.get(name)
                if found is not None:
                    groups.setdefault((found.type, found.value), []).append(item)
            cached[1][name] = groups
        return list(groups.get((kind, value), ()))

    @functools.wraps(original_query)
    def query(self: Any, *args: Any, **kwargs: Any) -> Any:
        conditions = kwargs.get("hash_key_conditions") or []
        index_name = kwargs.get("index_name") or (args[7] if len(args) > 7 else None)
        local.partition = None
        # Strings compare exactly as moto does; numbers (``"1"`` vs ``"1.0"``) are left to it.
        if index_name and len(conditions) == 1 and conditions[0][1].type == "S":
            name, value = conditions[0]
            local.partition = (name, value.type, value.value)
        local.in_query = True
        try:
            return original_query(self, *args, **kwargs)
        finally:
            local.in_query = False
            local.partition = None

    table_class.all_items = all_items
    table_class.query = query


def _fast_get_records() -> None:
    """moto 5.2 serialises ``GetRecords`` through its generic shape walker, about 4 ms a
    record (a full page of 1,000 takes seconds, past a client's read timeout). The records are
    plain JSON already: dump them directly (compact, as AWS sends JSON), timestamps as epoch
    seconds the way moto's own serialiser writes them (``_epoch_s``)."""
    import json
    from datetime import datetime

    from moto.dynamodbstreams.responses import DynamoDBStreamsHandler

    def default(value: Any) -> Any:
        if isinstance(value, datetime):
            return _epoch_s(value)
        raise TypeError(type(value).__name__)

    def get_records(self: Any) -> str:
        limit = self._get_param("Limit") or 1000
        result = self.backend.get_records(self._get_param("ShardIterator"), limit)
        return json.dumps(result, default=default, separators=(",", ":"))

    DynamoDBStreamsHandler.get_records = get_records  # type: ignore[method-assign, assignment]


def _epoch_s(value: Any) -> float:
    """A moto timestamp (naive, UTC) in epoch seconds, truncated to milliseconds: what moto's
    own ``TimestampSerializer`` writes for the JSON protocol, whatever the local time zone."""
    import calendar

    whole = calendar.timegm(value.utctimetuple())
    return whole + (value.microsecond // 1000) / 1000.0 if value.microsecond else whole


def _request_id_only_where_present() -> None:
    """moto runs a regular expression for ``<RequestId>`` over every response body to put the
    request id into it (XML services); on JSON bodies it matches nothing but still scans them
    (13 ms for a 1,000-record ``GetRecords`` page of 0.9 MB here). The scan is skipped when the
    tag is absent: the same body, the same ``x-amzn-requestid`` header."""
    from moto.core.responses import BaseResponse

    original = BaseResponse._enrich_response

    def _enrich_response(headers: dict[str, str], body: Any) -> tuple[dict[str, str], Any]:
        if isinstance(body, str) and "<RequestId>" not in body:
            from moto.utilities.aws_headers import gen_amzn_requestid_long

            if "status" in headers:
                headers["status"] = str(headers["status"])
            gen_amzn_requestid_long(headers)
            return headers, body
        return original(headers, body)

    BaseResponse._enrich_response = staticmethod(_enrich_response)  # type: ignore[method-assign, assignment]


def _lookups_once() -> None:
    """Two answers moto computes again on every request, though they cannot change while it
    runs: the names of its service packages (``os.listdir`` of its own directory and an
    ``isdir`` per entry, twice a request, to route by the ``Host`` header: 14% of its CPU per
    DynamoDB call under the flood bench) and a handler class's method names
    (``inspect.getmembers`` of the class, to find the action: 7%). Each is computed once; the
    answers are the same lists."""
    import functools

    import moto.backends as backends
    import moto.core.responses as responses

    modules = tuple(backends.list_of_moto_modules())

    def list_of_moto_modules() -> Any:
        return iter(modules)

    backends.list_of_moto_modules = list_of_moto_modules
    responses.method_names_from_class = functools.cache(responses.method_names_from_class)  # type: ignore[assignment]


class _Walk(Exception):
    """A value the plain copy does not handle: moto's own serializer writes it."""


def _plain(value: Any, shape: Any) -> Any:
    """``value`` as moto's JSON serializer writes it for ``shape``, for plain JSON values
    (strings, numbers, booleans, lists, maps, structures named by their members); ``_Walk``
    for anything else (bytes, timestamps, None in a map or list, a key that is not a member,
    a member renamed on the wire)."""
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict) or shape.is_document_type:
            raise _Walk
        members = shape.members
        out = {}
        for key, item in value.items():
            member = members.get(key)
            if member is None or "name" in member.serialization:
                raise _Walk
            if item is not None:  # moto leaves a None member out
                out[key] = _plain(item, member)
        return out
    if kind == "map":
        if not isinstance(value, dict):
            raise _Walk
        return {k: _plain(v, shape.value) for k, v in value.items() if _scalar_key(k)}
    if kind == "list":
        if not isinstance(value, list):
            raise _Walk
        return [_plain(v, shape.member) for v in value]
    if kind == "string" and type(value) is str:
        return value
    if kind in ("integer", "long") and type(value) is int:
        return value
    if kind in ("double", "float") and type(value) in (int, float):
        return float(value)  # as moto writes it (``CapacityUnits``)
    if kind == "boolean" and type(value) is bool:
        return value
    raise _Walk


def _scalar_key(key: Any) -> bool:
    if type(key) is not str:
        raise _Walk
    return True


def _plain_dynamodb_results() -> None:
    """moto writes each DynamoDB response through its generic shape walker, which looks every
    member up under several aliases (a quarter of its CPU per call under the flood bench). A
    DynamoDB result is already the wire's JSON (``dynamo_to_dict``): it is copied member by
    member against the same output shape instead (``_plain``), and anything that copy does not
    handle goes to moto's walker as before. The body parses to the same JSON
    (tests/integration/test_moto_server_lookups.py compares both on every response of a
    workload)."""
    from moto.core.serialize import JSONSerializer

    original = JSONSerializer._serialize_result

    def _serialize_result(self: Any, resp: Any, result: Any) -> Any:
        shape = self.operation_model.output_shape
        picker = getattr(self, "_value_picker", None)
        if (
            shape is not None
            and self.operation_model.service_model.service_name == "dynamodb"
            and not getattr(picker, "response_transformers", None)
        ):
            try:
                plain = _plain(result, shape)
            except _Walk:
                pass
            else:
                return self._serialized_result_to_response(resp, result, shape, plain)
        return original(self, resp, result)

    JSONSerializer._serialize_result = _serialize_result  # type: ignore[method-assign]


# Per table: the first sequence number its stream still holds (``/_meterbridge/streams/trim``).
# DynamoDB trims records older than 24 hours; moto never does, so tests trim by hand.
_TRIM_HORIZONS: dict[str, int] = {}
# Per table: a parent its one stream shard claims (a shard split's aftermath: the parent has
# left the stream), set with ``parent_shard`` on the same endpoint.
_PARENTS: dict[str, str] = {}


def _stream_trim() -> None:
    """DynamoDB Streams' trim, which moto lacks: ``TRIM_HORIZON`` starts at the table's
    horizon, and an iterator at or after a trimmed sequence number is refused with
    ``TrimmedDataAccessException``, as AWS does."""
    from moto.core.exceptions import JsonRESTError
    from moto.dynamodbstreams.models import DynamoDBStreamsBackend

    original = DynamoDBStreamsBackend.get_shard_iterator

    def get_shard_iterator(
        self: Any,
        arn: str,
        shard_id: str,
        shard_iterator_type: str,
        sequence_number: Any = None,
    ) -> Any:
        table = self._get_table_from_arn(arn)
        horizon = _TRIM_HORIZONS.get(table.name)
        if horizon is not None:
            if shard_iterator_type == "TRIM_HORIZON":
                shard_iterator_type, sequence_number = "AT_SEQUENCE_NUMBER", horizon
            elif shard_iterator_type in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
                first = int(sequence_number) + (shard_iterator_type == "AFTER_SEQUENCE_NUMBER")
                if first < horizon:
                    raise JsonRESTError(
                        "TrimmedDataAccessException",
                        "The operation attempted to read past the oldest stream record in a "
                        "shard (trimmed by the local moto server)",
                    )
        return original(self, arn, shard_id, shard_iterator_type, sequence_number)

    DynamoDBStreamsBackend.get_shard_iterator = get_shard_iterator  # type: ignore[method-assign]

    from moto.dynamodb.models.table import StreamShard

    original_json = StreamShard.to_json

    def to_json(self: Any) -> dict[str, Any]:
        found = original_json(self)
        parent = _PARENTS.get(self.table.name)
        if parent:
            found["ParentShardId"] = parent
        return found

    StreamShard.to_json = to_json  # type: ignore[method-assign]


def _serialised(method: Any, lock: Any) -> Any:
    import functools

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return method(*args, **kwargs)

    return wrapper


class FaultInjector:
    """WSGI middleware: throttles a share of DynamoDB calls while a fault is active."""

    PATH = "/_meterbridge/faults"
    TRIM_PATH = "/_meterbridge/streams/trim"

    def __init__(self, app: Any) -> None:
        import random
        import threading

        self.app = app
        self.lock = threading.Lock()
        self.random = random.Random(0)
        self.ratio = 0.0
        self.until = 0.0
        self.throttled = 0

    def _json(self, start_response: Any, status: str, body: dict[str, Any]) -> list[bytes]:
        payload = json.dumps(body).encode()
        start_response(
            status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
        )
        return [payload]

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        import random
        import time

        if environ.get("PATH_INFO") == self.TRIM_PATH and environ.get("REQUEST_METHOD") == "POST":
            # {"table": name, "before_sequence": "N"[, "parent_shard": id]}: the stream drops
            # the records before N (and its shard names a parent no longer in the stream).
            size = int(environ.get("CONTENT_LENGTH") or 0)
            spec = json.loads(environ["wsgi.input"].read(size) or b"{}")
            _TRIM_HORIZONS[str(spec["table"])] = int(spec["before_sequence"])
            if spec.get("parent_shard"):
                _PARENTS[str(spec["table"])] = str(spec["parent_shard"])
            return self._json(start_response, "200 OK", {"trimmed_before": spec["before_sequence"]})
        if environ.get("PATH_INFO") == self.PATH:
            method = environ.get("REQUEST_METHOD")
            with self.lock:
                if method == "POST":
                    size = int(environ.get("CONTENT_LENGTH") or 0)
                    spec = json.loads(environ["wsgi.input"].read(size) or b"{}")
                    self.ratio = float(spec.get("throttle_ratio", 1.0))
                    self.until = time.monotonic() + float(spec.get("seconds", 10))
                    self.random = random.Random(spec.get("seed", 0))
                elif method == "DELETE":
                    self.until = 0.0
                active = time.monotonic() < self.until
                return self._json(
                    start_response,
                    "200 OK",
                    {
                        "active": active,
                        "throttle_ratio": self.ratio if active else 0.0,
                        "throttled": self.throttled,
                    },
                )
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target.startswith("DynamoDB_"):
            with self.lock:
                hit = time.monotonic() < self.until and self.random.random() < self.ratio
                if hit:
                    self.throttled += 1
            if hit:
                return self._json(
                    start_response,
                    "400 Bad Request",
                    {
                        "__type": "com.amazonaws.dynamodb.v20120810#"
                        "ProvisionedThroughputExceededException",
                        "message": "The level of configured provisioned throughput for the table "
                        "was exceeded (injected by the local moto server)",
                    },
                )
        return self.app(environ, start_response)


def main(argv: list[str] | None = None) -> None:
    install()
    import moto.server as moto_server_module

    original_run_simple = moto_server_module.run_simple

    def run_simple(host: str, port: int, app: Any, **kwargs: Any) -> None:
        original_run_simple(host, port, FaultInjector(app), **kwargs)

    moto_server_module.run_simple = run_simple  # type: ignore[assignment]
    moto_server_module.main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
