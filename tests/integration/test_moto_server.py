"""The moto server wrapper keeps moto's transaction semantics with a cheaper backup."""

from __future__ import annotations

import time
from typing import Any

import httpx
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


def test_index_queries_see_every_write_made_between_them(aws: dict[str, str]) -> None:
    # Given segments in outbox shard "1" (an index query reads its partition, grouped once
    # per state of the tables: every kind of write must show in the next query)
    table = aws["EventsTable"]

    def shard_1() -> list[str]:
        items, _ = dynamo.query(
            table, index="outbox", key_condition="outbox_shard = :s", vals={":s": "1"}
        )
        return [str(i["pk"]) for i in items]

    for i in range(3):
        dynamo.put_new(
            table, {"pk": f"seg-{i}", "sk": "SEGMENT", "outbox_shard": "1", "outbox_at": f"a{i}"}
        )
    assert shard_1() == ["seg-0", "seg-1", "seg-2"]
    # When one moves to another shard (update), one is deleted, one is put, one is written by
    # a transaction and one by a batch write, and a cancelled transaction adds nothing
    dynamo.client().update_item(
        TableName=table,
        Key=dynamo.serialize({"pk": "seg-0", "sk": "SEGMENT"}),
        UpdateExpression="SET outbox_shard = :o",
        ExpressionAttributeValues=dynamo.serialize({":o": "2"}),
    )
    after_update = shard_1()
    dynamo.client().delete_item(
        TableName=table, Key=dynamo.serialize({"pk": "seg-1", "sk": "SEGMENT"})
    )
    after_delete = shard_1()
    dynamo.put_new(table, {"pk": "seg-3", "sk": "SEGMENT", "outbox_shard": "1", "outbox_at": "a3"})
    dynamo.client().transact_write_items(
        TransactItems=[_put(table, "seg-4", outbox_shard="1", outbox_at="a4")]
    )
    dynamo.client().batch_write_item(
        RequestItems={
            table: [
                {
                    "PutRequest": {
                        "Item": dynamo.serialize(
                            {"pk": "seg-5", "sk": "SEGMENT", "outbox_shard": "1", "outbox_at": "a5"}
                        )
                    }
                }
            ]
        }
    )
    after_writes = shard_1()
    with pytest.raises(Exception) as info:
        dynamo.client().transact_write_items(
            TransactItems=[
                _put(table, "seg-6", outbox_shard="1", outbox_at="a6"),
                _put(table, "seg-4", outbox_shard="1", outbox_at="a4"),
            ]
        )
    assert dynamo.error_code(info.value) == "TransactionCanceledException"
    # Then each query shows exactly the writes made before it
    assert after_update == ["seg-1", "seg-2"]
    assert after_delete == ["seg-2"]
    assert after_writes == ["seg-2", "seg-3", "seg-4", "seg-5"]
    assert shard_1() == after_writes
    moved, _ = dynamo.query(
        table, index="outbox", key_condition="outbox_shard = :s", vals={":s": "2"}
    )
    assert [i["pk"] for i in moved] == ["seg-0"]


def _stream(table: str) -> tuple[Any, str, str]:
    arn = dynamo.client().describe_table(TableName=table)["Table"]["LatestStreamArn"]
    streams = dynamo.streams_client()
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    return streams, arn, shard


def test_stream_pages_hold_every_record_once_in_order_and_iterators_resume(
    aws: dict[str, str],
) -> None:
    # Given 25 records written one by one and an update of one of them (GetRecords is
    # encoded by the launcher: records, order, iterators and timestamps must be moto's)
    table = aws["EventsTable"]
    before = time.time()
    for i in range(25):
        dynamo.put_new(table, {"pk": f"e-{i:02d}", "sk": "EVENT", "n": i, "event": "{}"})
    dynamo.client().update_item(
        TableName=table,
        Key=dynamo.serialize({"pk": "e-03", "sk": "EVENT"}),
        UpdateExpression="SET n = :n",
        ExpressionAttributeValues=dynamo.serialize({":n": 99}),
    )
    streams, arn, shard = _stream(table)
    # When the shard is read from its start in pages of 10, then past the end
    it = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    it = it["ShardIterator"]
    pages: list[list[dict[str, Any]]] = []
    while True:
        resp = streams.get_records(ShardIterator=it, Limit=10)
        it = resp["NextShardIterator"]
        if not resp["Records"]:
            break
        pages.append(resp["Records"])
    # Then the pages hold every record once, in write order, with their images
    assert [len(p) for p in pages] == [10, 10, 6]
    records = [r for p in pages for r in p]
    seqs = [int(r["dynamodb"]["SequenceNumber"]) for r in records]
    assert seqs == sorted(seqs) and len(set(seqs)) == 26
    assert [r["eventName"] for r in records] == ["INSERT"] * 25 + ["MODIFY"]
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in records[:25]] == [
        f"e-{i:02d}" for i in range(25)
    ]
    assert records[0]["dynamodb"]["NewImage"]["n"] == {"N": "0"}
    assert records[-1]["dynamodb"]["NewImage"]["n"] == {"N": "99"}
    # And each record's time is when it was written (UTC, whatever the local time zone)
    for r in records:
        created = r["dynamodb"]["ApproximateCreationDateTime"].timestamp()
        assert before - 1 <= created <= time.time() + 1
    # And the iterator past the end sees the next write, and AFTER_SEQUENCE_NUMBER resumes
    # just after a record
    dynamo.put_new(table, {"pk": "e-late", "sk": "EVENT"})
    late = streams.get_records(ShardIterator=it)["Records"]
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in late] == ["e-late"]
    after = streams.get_shard_iterator(
        StreamArn=arn,
        ShardId=shard,
        ShardIteratorType="AFTER_SEQUENCE_NUMBER",
        SequenceNumber=str(seqs[9]),
    )["ShardIterator"]
    resumed = streams.get_records(ShardIterator=after, Limit=3)["Records"]
    assert [int(r["dynamodb"]["SequenceNumber"]) for r in resumed] == seqs[10:13]


def test_a_trimmed_stream_starts_at_its_horizon_and_refuses_older_iterators(
    aws: dict[str, str], moto_server: Any
) -> None:
    # Given 5 records, the stream trimmed before the fourth
    table = aws["EventsTable"]
    for i in range(5):
        dynamo.put_new(table, {"pk": f"t-{i}", "sk": "EVENT"})
    streams, arn, shard = _stream(table)
    start = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )
    seqs = [
        r["dynamodb"]["SequenceNumber"]
        for r in streams.get_records(ShardIterator=start["ShardIterator"])["Records"]
    ]
    httpx.post(
        f"{moto_server.url}/_meterbridge/streams/trim",
        json={"table": table, "before_sequence": seqs[3]},
    ).raise_for_status()
    # When the shard is read from TRIM_HORIZON, and from after the first record
    horizon = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )
    kept = streams.get_records(ShardIterator=horizon["ShardIterator"])["Records"]
    with pytest.raises(Exception) as info:
        streams.get_shard_iterator(
            StreamArn=arn,
            ShardId=shard,
            ShardIteratorType="AFTER_SEQUENCE_NUMBER",
            SequenceNumber=seqs[0],
        )
    # Then only the records from the horizon are read, and the older position is refused
    assert [r["dynamodb"]["SequenceNumber"] for r in kept] == seqs[3:]
    assert dynamo.error_code(info.value) == "TrimmedDataAccessException"


def test_responses_carry_the_request_id_in_their_header_and_xml_bodies(moto_server: Any) -> None:
    # Given a JSON service (DynamoDB) and an XML one (STS) on the launcher, which skips moto's
    # request-id substitution on bodies without a <RequestId> tag
    import boto3

    kwargs = {"endpoint_url": moto_server.url, "region_name": "us-east-1"}
    # When each is called
    listed = boto3.client("dynamodb", **kwargs).list_tables()
    sts = boto3.client("sts", **kwargs).get_caller_identity()
    # Then the JSON body is intact with its request id in the header, and the XML body holds
    # the same request id as its header
    assert isinstance(listed["TableNames"], list)
    meta = listed["ResponseMetadata"]
    assert len(meta["HTTPHeaders"]["x-amzn-requestid"]) == 52
    assert sts["Account"]
    assert (
        sts["ResponseMetadata"]["RequestId"]
        == sts["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    )


def test_a_stream_time_is_epoch_seconds_in_utc_to_the_millisecond() -> None:
    # Given moto's naive UTC timestamps
    from datetime import datetime

    from meterbridge_dev.fakes.moto_server import _epoch_s

    # Then they are written as moto's own serialiser writes them, in any local time zone
    assert _epoch_s(datetime(2026, 12, 3, 14, 0, 0)) == 1_796_306_400
    assert _epoch_s(datetime(2026, 12, 3, 14, 0, 0, 123_987)) == 1_796_306_400.123
