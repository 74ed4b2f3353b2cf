"""bench/cost's DynamoDB arithmetic against the examples and rules in AWS's documentation
("DynamoDB item sizes and formats"; "Read/write capacity mode")."""

from __future__ import annotations

import pytest
from bench.cost import sizes


def test_a_string_is_its_name_plus_its_utf8_bytes() -> None:
    # Given a 5-byte name and a value of 3 characters, one of them 2 bytes in UTF-8
    item = {"color": {"S": "réd"}}
    # Then the size is 5 + 4
    assert sizes.item_size(item) == 9


@pytest.mark.parametrize(
    ("number", "size"),
    [
        ("1", 2),  # 1 significant digit -> 1 byte, plus 1
        ("12", 2),
        ("123", 3),  # 3 digits -> 2 bytes, plus 1
        ("1000", 2),  # trailing zeros trimmed
        ("0.001", 2),  # leading zeros trimmed
        ("-123.45", 4),  # 5 digits -> 3 bytes, plus 1; the sign is not a digit
        ("12345678901234567890123456789012345678", 20),  # 38 digits, the maximum
    ],
)
def test_a_number_is_one_byte_per_two_significant_digits_plus_one(number: str, size: int) -> None:
    assert sizes.value_size({"N": number}) == size


def test_binary_null_and_boolean() -> None:
    assert sizes.item_size({"b": {"B": b"\x00\x01\x02"}}) == 1 + 3
    assert sizes.item_size({"n": {"NULL": True}, "t": {"BOOL": False}}) == (1 + 1) + (1 + 1)


def test_a_list_or_map_has_3_bytes_of_overhead_and_1_byte_per_element() -> None:
    # Empty: name + 3
    assert sizes.item_size({"l": {"L": []}}) == 1 + 3
    assert sizes.item_size({"m": {"M": {}}}) == 1 + 3
    # A list of two strings: 3 + (1 + 1) + (2 + 1)
    assert sizes.item_size({"l": {"L": [{"S": "a"}, {"S": "bc"}]}}) == 1 + 3 + 2 + 3
    # A map element counts its name: 3 + (len("k") + 1 value byte + 1)
    assert sizes.item_size({"m": {"M": {"k": {"S": "v"}}}}) == 1 + 3 + 3


def test_sets_are_the_sum_of_their_elements() -> None:
    assert sizes.item_size({"ss": {"SS": ["a", "bb"]}}) == 2 + 3
    assert sizes.item_size({"ns": {"NS": ["1", "123"]}}) == 2 + (2 + 3)


def test_capacity_units_follow_the_documented_examples() -> None:
    # "A 3.5 KB item written consumes 4 WCUs"; a transactional write costs twice.
    assert sizes.write_units(3584) == 4
    assert sizes.write_units(1024, transactional=True) == 2
    assert sizes.write_units(1025) == 2
    assert sizes.write_units(10) == 1  # at least one unit
    # "An item up to 4 KB: 1 RCU strongly consistent, 0.5 eventually consistent, 2 in a
    # transaction"; an 8 KB item is 2 RCU strongly consistent.
    assert sizes.read_units(4096, consistent=True) == 1.0
    assert sizes.read_units(4096, consistent=False) == 0.5
    assert sizes.read_units(4096, consistent=True, transactional=True) == 2.0
    assert sizes.read_units(8 * 1024, consistent=True) == 2.0
    # A Query rounds the sum of the items it read once: 40 items of 100 bytes = 1 block
    assert sizes.read_units(40 * 100, consistent=False) == 0.5


def test_index_writes_put_delete_update_and_move() -> None:
    keys = ("dead", "outbox_at")
    old = {"pk": {"S": "p"}, "sk": {"S": "EVENT"}, "dead": {"S": "DEAD"}, "outbox_at": {"S": "a"}}
    moved = {**old, "outbox_at": {"S": "b"}}
    # Sparse: an item without the index key has no entry
    no_key = {"pk": {"S": "p"}, "sk": {"S": "EVENT"}}
    assert (
        sizes.index_entry(no_key, index_keys=keys, table_keys=("pk", "sk"), projection="ALL")
        is None
    )
    assert sizes.index_write_units(None, old, keys) == 1  # put
    assert sizes.index_write_units(old, None, keys) == 1  # delete
    assert sizes.index_write_units(old, {**old, "x": {"S": "y"}}, keys) == 1  # update in place
    assert sizes.index_write_units(old, moved, keys) == 2  # index key changed: delete + put
    assert sizes.index_write_units(old, old, keys) == 0  # entry unchanged
    # KEYS_ONLY keeps the index and table keys only
    entry = sizes.index_entry(
        {**old, "event": {"S": "x" * 5000}},
        index_keys=keys,
        table_keys=("pk", "sk"),
        projection="KEYS_ONLY",
    )
    assert entry == old
