"""The moto server wrapper makes two of moto's per-request lookups once (its service packages,
a handler's method names): the answers are moto's own, and routing by them is unchanged."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import httpx

# In a fresh interpreter (the test process keeps moto unpatched): moto's own answers before
# ``install()``, the wrapper's after it.
_COMPARE = """
import inspect, json
import moto.backends as backends
import moto.core.responses as responses
from moto.dynamodb.responses import DynamoHandler
from moto.dynamodbstreams.responses import DynamoDBStreamsHandler
from moto.sts.responses import TokenResponse
classes = (DynamoHandler, DynamoDBStreamsHandler, TokenResponse)
before = (list(backends.list_of_moto_modules()),
          [responses.method_names_from_class(c) for c in classes])
from meterbridge_dev.fakes import moto_server
moto_server.install()
after = [(list(backends.list_of_moto_modules()),
          [responses.method_names_from_class(c) for c in classes]) for _ in range(2)]
print(json.dumps({"before": before, "after": after}))
"""


def test_the_lookups_made_once_answer_as_moto_does() -> None:
    # Given moto's own answers, and the wrapper's after install (asked twice: the cached one)
    done = subprocess.run(
        [sys.executable, "-c", _COMPARE], capture_output=True, text=True, check=True, timeout=120
    )
    found = json.loads(done.stdout)

    # Then both answers are moto's, every time
    modules, names = found["before"]
    assert "dynamodb" in modules and "dynamodbstreams" in modules
    assert all("call_action" in n for n in names)
    for answer in found["after"]:
        assert answer == [modules, names]


def test_dynamodb_and_its_streams_are_routed_by_the_cached_package_names(
    moto_server: Any,
) -> None:
    # Given the launcher's server, which finds the service of a signed DynamoDB request
    # ("dynamodb", "dynamodbstreams") in the cached list of its packages
    signed = {
        "Content-Type": "application/x-amz-json-1.0",
        "Authorization": (
            "AWS4-HMAC-SHA256 Credential=testing/20261203/us-east-1/dynamodb/aws4_request, "
            "SignedHeaders=host, Signature=0"
        ),
    }

    # When each service is called
    tables = httpx.post(
        moto_server.url,
        content=b"{}",
        headers={**signed, "X-Amz-Target": "DynamoDB_20120810.ListTables"},
        timeout=30,
    )
    streams = httpx.post(
        moto_server.url,
        content=b"{}",
        headers={**signed, "X-Amz-Target": "DynamoDBStreams_20120810.ListStreams"},
        timeout=30,
    )

    # Then each answers as itself, through its handler's (cached) method names
    assert tables.status_code == 200, tables.text
    assert isinstance(tables.json()["TableNames"], list)
    assert streams.status_code == 200, streams.text
    assert isinstance(streams.json()["Streams"], list)
