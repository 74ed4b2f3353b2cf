"""The client bench's DynamoDB unit meter applies DynamoDB's billing rules (bench/client)."""

from __future__ import annotations

from bench.client.units import item_size, units_of


def test_item_size_follows_dynamodb_rules() -> None:
    # name bytes + value bytes; numbers: 1 byte per 2 significant digits + 1; maps/lists: 3 + 1
    # per element
    assert item_size({"pk": {"S": "abc"}}) == 2 + 3
    assert item_size({"n": {"N": "12345"}}) == 1 + 4
    assert item_size({"é": {"S": "é"}}) == 2 + 2
    assert item_size({"m": {"M": {"a": {"BOOL": True}}}}) == 1 + 3 + 1 + 1 + 1
    assert item_size({"l": {"L": [{"NULL": True}, {"S": "xy"}]}}) == 1 + 3 + 2 + 1 + 2


def test_writes_cost_a_unit_per_kb_and_double_in_transactions() -> None:
    big = {"pk": {"S": "k"}, "body": {"S": "x" * 1500}}  # 1,507 bytes: 2 units
    small = {"pk": {"S": "k"}}
    assert units_of("PutItem", {"Item": big}, {}) == (0.0, 2)
    assert units_of(
        "BatchWriteItem", {"RequestItems": {"t": [{"PutRequest": {"Item": big}}]}}, {}
    ) == (0.0, 2)
    transact = {"TransactItems": [{"Put": {"Item": big}}, {"ConditionCheck": {"Key": small}}]}
    assert units_of("TransactWriteItems", transact, {}) == (0.0, 2 * 2 + 2 * 1)
    update = {"Key": small, "ExpressionAttributeValues": {":n": {"N": "5"}}}
    assert units_of("UpdateItem", update, {}) == (0.0, 1)


def test_reads_cost_a_unit_per_4_kb_and_half_when_eventually_consistent() -> None:
    item = {"pk": {"S": "k"}, "body": {"S": "x" * 5000}}  # 5,007 bytes: 2 read units
    assert units_of("GetItem", {"ConsistentRead": True}, {"Item": item}) == (2.0, 0)
    assert units_of("GetItem", {}, {"Item": item}) == (1.0, 0)
    assert units_of("Query", {}, {"Items": [item, item]}) == (1.5, 0)  # 10,014 bytes: 3 / 2
    assert units_of("GetItem", {}, {}) == (0.5, 0)  # a miss still costs the minimum
