"""dal.dynamo's typed wire form follows boto3's TypeSerializer and TypeDeserializer.

The DAL converts without boto3 (its import loads s3transfer and multiprocessing, which a cold
start does not need: docs/performance/cold_start.md); boto3 is the reference here.
"""

from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer

from meterbridge.dal import dynamo

VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -7,
    10**37,
    Decimal("12.50"),
    Decimal("-0.000001"),
    "",
    "tenant#t_1",
    b"\x00raw",
    {"a": 1, "b": [1, "x", None, {"c": Decimal("2.5")}]},
    [],
    {},
    ("t", 1),
    {1, 2, Decimal("3.5")},
    {"x", "y"},
    {b"a", b"b"},
]
WRONG: list[Any] = [1.5, Decimal("Infinity"), Decimal("NaN"), object(), {1, "x"}, 10**40 + 1]


def _same(ours: Any, theirs: Any) -> bool:
    if isinstance(theirs, Binary):
        return ours == theirs.value
    if isinstance(theirs, set) and isinstance(ours, set):
        return ({x.value if isinstance(x, Binary) else x for x in theirs}) == ours
    if isinstance(theirs, list) and isinstance(ours, list):
        return len(ours) == len(theirs) and all(map(_same, ours, theirs))
    if isinstance(theirs, dict) and isinstance(ours, dict):
        return ours.keys() == theirs.keys() and all(_same(ours[k], theirs[k]) for k in theirs)
    return type(ours) is type(theirs) and ours == theirs


def _sorted_sets(wire: Any) -> Any:
    if isinstance(wire, dict):
        return {
            k: sorted(v) if k in ("NS", "SS", "BS") else _sorted_sets(v) for k, v in wire.items()
        }
    if isinstance(wire, list):
        return [_sorted_sets(v) for v in wire]
    return wire


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_a_value_is_written_as_boto3_writes_it(value: Any) -> None:
    # Given a value of a type DynamoDB stores
    # When it is converted to the wire form by the DAL and by boto3
    ours = dynamo.serialize({"v": value}) if value is not None else {"v": dynamo._wire(None)}
    theirs = {"v": TypeSerializer().serialize(value)}
    # Then the two are the same (set members in any order)
    assert _sorted_sets(ours) == _sorted_sets(theirs)


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_a_wire_value_is_read_as_boto3_reads_it(value: Any) -> None:
    # Given a value in boto3's wire form
    wire = {"v": TypeSerializer().serialize(value)}
    # When it is read back exactly by the DAL and by boto3
    ours = dynamo.deserialize_exact(wire)["v"]
    theirs = TypeDeserializer().deserialize(wire["v"])
    # Then they are equal, numbers as Decimal and binary as bytes (boto3's Binary wraps them)
    assert _same(ours, theirs)


@pytest.mark.parametrize("value", WRONG, ids=repr)
def test_what_boto3_refuses_is_refused(value: Any) -> None:
    # Given a value boto3 cannot write (a float is converted by serialize first, so _wire)
    # When the DAL converts it
    # Then it raises TypeError, or the decimal error boto3 raises too
    with pytest.raises(Exception) as theirs:
        TypeSerializer().serialize(value)
    with pytest.raises(theirs.type):
        dynamo._wire(value)


def test_plain_reads_keep_numbers_as_int_or_float() -> None:
    # Given an item read from DynamoDB
    item = {"n": {"N": "3"}, "f": {"N": "2.5"}, "s": {"SS": ["a"]}}
    # When it is deserialized for the domain
    # Then numbers are int or float as before, sets are sets
    assert dynamo.deserialize(item) == {"n": 3, "f": 2.5, "s": {"a"}}
