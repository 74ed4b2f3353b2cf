"""The DAL's conditional writes against a moto server over HTTP."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from meterbridge.dal import dynamo
from meterbridge.errors import ConditionFailed, StorageUnavailable


def test_put_new_writes_once_and_reports_the_duplicate(aws: dict[str, str]) -> None:
    # Given an empty idempotency table
    table = aws["IdempotencyTable"]
    item = {"pk": "STRIPE#evt_1", "sk": "WEBHOOK", "n": 1, "ratio": 0.5}
    # When the same item is written twice
    first = dynamo.put_new(table, item)
    second = dynamo.put_new(table, {**item, "n": 2})
    # Then only the first write happened, and numbers round-trip as int and float
    assert (first, second) == (True, False)
    assert dynamo.get(table, {"pk": "STRIPE#evt_1", "sk": "WEBHOOK"}) == item


def test_conditional_update_that_does_not_hold_raises_condition_failed(aws: dict[str, str]) -> None:
    # Given an item in state "done"
    table = aws["IdempotencyTable"]
    key = {"pk": "X", "sk": "Y"}
    dynamo.put_new(table, {**key, "state": "done"})
    # When an update requires state "processing"
    with pytest.raises(ConditionFailed):
        dynamo.update(
            table,
            key,
            set_="SET #s = :n",
            condition="#s = :p",
            names={"#s": "state"},
            vals={":n": "x", ":p": "processing"},
        )
    # Then the item is unchanged
    assert dynamo.get(table, key)["state"] == "done"


def test_query_pages_through_an_index(aws: dict[str, str]) -> None:
    # Given three tenant profiles in the tenants table's listing index
    table = aws["TenantsTable"]
    for i in range(3):
        dynamo.put_new(
            table,
            {
                "pk": f"TENANT#{i}",
                "sk": "PROFILE",
                "gsi1pk": "TENANT",
                "gsi1sk": f"2026-01-0{i + 1}#{i}",
            },
        )
    # When queried two at a time
    page1, last = dynamo.query(
        table, index="tenants", key_condition="gsi1pk = :p", vals={":p": "TENANT"}, limit=2
    )
    page2, end = dynamo.query(
        table,
        index="tenants",
        key_condition="gsi1pk = :p",
        vals={":p": "TENANT"},
        limit=2,
        start_key=last,
    )
    # Then the pages cover every item once, in order
    assert [i["pk"] for i in page1 + page2] == ["TENANT#0", "TENANT#1", "TENANT#2"]
    assert end is None


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("ProvisionedThroughputExceededException", StorageUnavailable),
        ("ThrottlingException", StorageUnavailable),
        ("ConditionalCheckFailedException", ConditionFailed),
        ("ValidationException", StorageUnavailable),
    ],
)
def test_client_error_codes_become_domain_errors(code: str, expected: type) -> None:
    # Given a botocore error with a code
    exc = ClientError({"Error": {"Code": code, "Message": "m"}}, "PutItem")
    # When translated / Then by code, never by message
    translated = dynamo.translate(exc, "put t")
    assert type(translated) is expected
    if code.endswith("Exceeded") or code == "ThrottlingException":
        assert translated.headers == {"Retry-After": "1"}


def test_update_if_answers_whether_the_condition_held(aws: dict[str, str]) -> None:
    # Given an item in state "pending"
    table = aws["IdempotencyTable"]
    key = {"pk": "U", "sk": "V"}
    dynamo.put_new(table, {**key, "state": "pending"})
    # When two conditional updates need "pending", one after the other
    first = dynamo.update_if(
        table,
        key,
        set_="SET #s = :d",
        condition="#s = :p",
        names={"#s": "state"},
        vals={":d": "done", ":p": "pending"},
    )
    second = dynamo.update_if(
        table,
        key,
        set_="SET #s = :x",
        condition="#s = :p",
        names={"#s": "state"},
        vals={":x": "again", ":p": "pending"},
    )
    # Then only the first applied, and the second changed nothing
    assert (first, second) == (True, False)
    assert dynamo.get(table, key)["state"] == "done"


def _fresh_client() -> None:
    from meterbridge.settings import get_settings

    get_settings.cache_clear()
    dynamo.reset_clients()


def test_client_timeouts_and_attempts_come_from_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given DYNAMODB_* set as a loaded test machine needs them
    monkeypatch.setenv("DYNAMODB_CONNECT_TIMEOUT_S", "7")
    monkeypatch.setenv("DYNAMODB_READ_TIMEOUT_S", "45")
    monkeypatch.setenv("DYNAMODB_MAX_ATTEMPTS", "6")
    _fresh_client()
    # When the client is made
    config = dynamo.client().meta.config
    # Then it uses them
    assert (config.connect_timeout, config.read_timeout) == (7.0, 45.0)
    assert config.retries["total_max_attempts"] == 6


def test_client_defaults_fit_dynamodb_on_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given no DYNAMODB_* variable (a deployed function)
    for var in ("DYNAMODB_CONNECT_TIMEOUT_S", "DYNAMODB_READ_TIMEOUT_S", "DYNAMODB_MAX_ATTEMPTS"):
        monkeypatch.delenv(var, raising=False)
    _fresh_client()
    # When the client is made / Then short timeouts, five attempts (four retries)
    config = dynamo.client().meta.config
    assert (config.connect_timeout, config.read_timeout) == (2.0, 5.0)
    assert config.retries["total_max_attempts"] == 5


def test_tests_and_the_local_stack_give_moto_generous_timeouts() -> None:
    # Given the test environment (conftest sets the local stack's values)
    # When the client is made / Then it waits long enough for a loaded machine
    config = dynamo.client().meta.config
    assert config.connect_timeout >= 10 and config.read_timeout >= 60
