"""The moto server wrapper keeps moto's transaction semantics with a cheaper backup."""

from __future__ import annotations

import pytest

from meterbridge.dal import dynamo


def _put(table: str, pk: str, **attrs: object) -> dict:
    return {
        "Put": {
            "TableName": table,
            "Item": dynamo.serialize({"pk": pk, "sk": "EVENT", **attrs}),
            "ConditionExpression": "attribute_not_exists(pk)",
        }
    }


def test_cancelled_transaction_changes_nothing(aws: dict[str, str]) -> None:
    # Given an existing item and an item that the transaction will update
    table = aws["EventsTable"]
    dynamo.put_new(table, {"pk": "exists", "sk": "EVENT", "v": 1})
    dynamo.put_new(table, {"pk": "counter", "sk": "EVENT", "n": 5})
    update = {
        "Update": {
            "TableName": table,
            "Key": dynamo.serialize({"pk": "counter", "sk": "EVENT"}),
            "UpdateExpression": "ADD n :one",
            "ExpressionAttributeValues": dynamo.serialize({":one": 1}),
        }
    }
    # When a transaction puts a new item, updates the counter, and fails on the existing one
    with pytest.raises(Exception) as info:
        dynamo.client().transact_write_items(
            TransactItems=[_put(table, "new"), update, _put(table, "exists", v=2)]
        )
    # Then it is cancelled with the failing item's reason, and every item is as before
    assert dynamo.error_code(info.value) == "TransactionCanceledException"
    reasons = [r.get("Code") for r in info.value.response["CancellationReasons"]]
    assert reasons == ["None", "None", "ConditionalCheckFailed"]
    assert dynamo.get(table, {"pk": "new", "sk": "EVENT"}) is None
    assert dynamo.get(table, {"pk": "counter", "sk": "EVENT"})["n"] == 5
    assert dynamo.get(table, {"pk": "exists", "sk": "EVENT"})["v"] == 1


def test_successful_transaction_writes_every_item(aws: dict[str, str]) -> None:
    # Given an empty table / When a 100-item transaction commits
    table = aws["EventsTable"]
    dynamo.client().transact_write_items(
        TransactItems=[_put(table, f"e{i}", i=i) for i in range(100)]
    )
    # Then all 100 items are there
    items, _ = dynamo.query(table, key_condition="pk = :p", vals={":p": "e99"})
    assert items[0]["i"] == 99
    assert all(dynamo.get(table, {"pk": f"e{i}", "sk": "EVENT"}) for i in range(0, 100, 9))


def test_injected_throttling_reaches_the_dal_as_storage_unavailable(
    aws: dict[str, str], moto_server
) -> None:
    import httpx

    from meterbridge.errors import StorageUnavailable

    # Given every DynamoDB call throttled for 30 s (boto3's own retries exhausted)
    faults = f"{moto_server.url}/_meterbridge/faults"
    httpx.post(faults, json={"throttle_ratio": 1.0, "seconds": 30}).raise_for_status()
    try:
        # When the DAL writes / Then it raises the domain error with a Retry-After
        with pytest.raises(StorageUnavailable) as info:
            dynamo.put_new(aws["IdempotencyTable"], {"pk": "t", "sk": "t"})
        assert info.value.headers == {"Retry-After": "1"}
        assert httpx.get(faults).json()["throttled"] >= 1
    finally:
        # When the fault ends / Then writes go through again
        httpx.delete(faults).raise_for_status()
    assert dynamo.put_new(aws["IdempotencyTable"], {"pk": "t", "sk": "t"}) is True


def test_index_queries_return_only_matches_in_key_order_across_pages(aws: dict[str, str]) -> None:
    # Given items spread over three outbox shards, written in shuffled order, and items that
    # are not in the index at all (the query skips moto's whole-table sort; results must not
    # change)
    import random

    table = aws["EventsTable"]
    rows = [
        (str(i % 3), f"2026-11-20T10:00:{i % 60:02d}.000Z#{i:03d}", f"seg-{i:03d}")
        for i in range(90)
    ]
    random.Random(5).shuffle(rows)
    for shard, at, pk in rows:
        dynamo.put_new(table, {"pk": pk, "sk": "SEGMENT", "outbox_shard": shard, "outbox_at": at})
    for i in range(20):
        dynamo.put_new(table, {"pk": f"plain-{i}", "sk": "EVENT", "outbox_at": f"x{i}"})
    # When shard "1" is read forward in pages of 7, and backward in one page
    seen: list[str] = []
    start = None
    while True:
        page, start = dynamo.query(
            table,
            index="outbox",
            key_condition="outbox_shard = :s",
            vals={":s": "1"},
            limit=7,
            start_key=start,
        )
        seen.extend(i["outbox_at"] for i in page)
        if start is None:
            break
    backward = dynamo.client().query(
        TableName=table,
        IndexName="outbox",
        KeyConditionExpression="outbox_shard = :s",
        ExpressionAttributeValues={":s": {"S": "1"}},
        ScanIndexForward=False,
    )["Items"]
    # Then exactly shard 1's items come back, in outbox_at order both ways
    expected = sorted(at for shard, at, _ in rows if shard == "1")
    assert seen == expected
    assert [i["outbox_at"]["S"] for i in backward] == expected[::-1]
    # And a base-table query still finds one partition's items in sort-key order
    items, _ = dynamo.query(table, key_condition="pk = :p", vals={":p": "seg-004"})
    assert [i["sk"] for i in items] == ["SEGMENT"]


def test_an_item_over_the_size_limit_is_refused_and_one_under_it_stored(
    aws: dict[str, str],
) -> None:
    # Given an item just under DynamoDB's 400 KB limit and one over it (the launcher measures
    # an item once instead of per attribute; the limit must hold the same)
    table = aws["EventsTable"]
    small = {"pk": "fits", "sk": "EVENT", "a": "x" * 200_000, "b": "y" * 190_000}
    large = {"pk": "too-big", "sk": "EVENT", "a": "x" * 200_000, "b": "y" * 210_000}
    # When both are put
    dynamo.client().put_item(TableName=table, Item=dynamo.serialize(small))
    with pytest.raises(Exception) as info:
        dynamo.client().put_item(TableName=table, Item=dynamo.serialize(large))
    # Then the first is stored whole and the second refused as DynamoDB refuses it
    assert dynamo.error_code(info.value) == "ValidationException"
    assert "size" in str(info.value).lower()
    assert len(dynamo.get(table, {"pk": "fits", "sk": "EVENT"})["b"]) == 190_000
    assert dynamo.get(table, {"pk": "too-big", "sk": "EVENT"}) is None
