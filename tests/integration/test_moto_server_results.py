"""The moto server wrapper copies plain DynamoDB results instead of walking moto's generic
serializer: on every response of a workload (the usage API's own calls, and calls whose
results are not plain JSON), the body parses to what moto's own serializer writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# In a fresh interpreter: moto in this process (werkzeug, one thread) with the wrapper
# installed, each DynamoDB result serialized both ways and compared.
_WORKLOAD = r"""
import copy, json, os, threading
from bench.tables import BENCH_ENV, fresh_tables
os.environ.update(BENCH_ENV)
os.environ["POWERTOOLS_LOG_LEVEL"] = "ERROR"
from moto.core.serialize import JSONSerializer
moto_own = JSONSerializer._serialize_result
from meterbridge_dev.fakes import moto_server
moto_server.install()
plain = JSONSerializer._serialize_result
seen = {"compared": 0, "plain": 0, "walked": [], "mismatches": []}

def both(self, resp, result):
    mine = plain(self, copy.deepcopy(resp), result)
    theirs = moto_own(self, copy.deepcopy(resp), result)
    seen["compared"] += 1
    try:
        moto_server._plain(result, self.operation_model.output_shape)
        seen["plain"] += 1
    except moto_server._Walk:
        seen["walked"].append(self.operation_model.name)
    same = json.loads(mine["body"]) == json.loads(theirs["body"])
    if not same or mine["headers"] != theirs["headers"]:
        seen["mismatches"].append([self.operation_model.name, mine["body"], theirs["body"]])
    return mine

JSONSerializer._serialize_result = both
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server
server = make_server("127.0.0.1", 0, DomainDispatcherApplication(create_backend_app))
threading.Thread(target=server.serve_forever, daemon=True).start()
url = f"http://127.0.0.1:{server.server_port}"
fresh_tables(url)

from bench.flood import calls
from meterbridge.api import tenant_auth
lookup = tenant_auth._authenticate
calls._run(40, True, lookup, True)  # a Basic burst: ingest, usage reads, key lookups
calls._run(20, True, lookup, True, "pro", True)  # a steady tenant's pairs

from meterbridge.dal import dynamo
client = dynamo.client()
table = os.environ["USAGE_TABLE"]
client.put_item(TableName=table, Item={"pk": {"S": "x"}, "sk": {"S": "1"}, "b": {"B": b"\x00\x01"},
                "n": {"N": "1.5"}, "l": {"L": [{"NULL": True}, {"BOOL": False}]},
                "ss": {"SS": ["a", "b"]}, "m": {"M": {"k": {"S": "v"}}}})
client.put_item(TableName=table, Item={"pk": {"S": "x"}, "sk": {"S": "2"}, "v": {"S": "w"}},
                ReturnValues="ALL_OLD")
client.put_item(TableName=table, Item={"pk": {"S": "x"}, "sk": {"S": "2"}, "v": {"S": "z"}},
                ReturnValues="ALL_OLD", ReturnConsumedCapacity="TOTAL")
client.get_item(TableName=table, Key={"pk": {"S": "x"}, "sk": {"S": "1"}})
client.get_item(TableName=table, Key={"pk": {"S": "x"}, "sk": {"S": "9"}})
client.update_item(TableName=table, Key={"pk": {"S": "x"}, "sk": {"S": "2"}},
                   UpdateExpression="ADD c :n", ExpressionAttributeValues={":n": {"N": "2"}},
                   ReturnValues="ALL_NEW")
client.query(TableName=table, KeyConditionExpression="pk = :p",
             ExpressionAttributeValues={":p": {"S": "x"}}, Limit=1)
client.query(TableName=table, KeyConditionExpression="pk = :p",
             ExpressionAttributeValues={":p": {"S": "x"}}, Select="COUNT")
client.batch_get_item(RequestItems={table: {"Keys": [{"pk": {"S": "x"}, "sk": {"S": "1"}},
                                                      {"pk": {"S": "x"}, "sk": {"S": "2"}}]}})
client.scan(TableName=table, Limit=5)
client.describe_table(TableName=table)
client.list_tables()
client.delete_item(TableName=table, Key={"pk": {"S": "x"}, "sk": {"S": "2"}},
                   ReturnValues="ALL_OLD")
server.shutdown()
print(json.dumps(seen))
"""


def test_every_dynamodb_result_reads_as_moto_writes_it() -> None:
    # Given the wrapper's plain copy and moto's own serializer, both run on every result
    done = subprocess.run(
        [sys.executable, "-c", _WORKLOAD],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])

    # Then each body parses to the same JSON with the same headers; most results took the
    # plain copy, and those it does not handle (bytes, a table's timestamps) moto's walker
    assert seen["mismatches"] == []
    assert seen["plain"] >= 100
    assert {"DescribeTable", "CreateTable", "GetItem"} <= set(seen["walked"])
    # (the usage API's writes all take the plain copy; one query reads an item with bytes)
    assert {"TransactWriteItems", "UpdateItem"}.isdisjoint(seen["walked"])
    assert seen["walked"].count("Query") == 1
