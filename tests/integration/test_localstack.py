"""LocalStack through testcontainers, used only where a Docker engine answers.

The rest of the suite runs on a moto server; this test proves the same DAL code against
LocalStack when Docker is available (it is not on the CI machine: the skip says why).
"""

from __future__ import annotations

import pytest

from tests.support.fixtures import docker_available


@pytest.fixture
def localstack(monkeypatch: pytest.MonkeyPatch):
    ok, reason = docker_available()
    if not ok:
        pytest.skip(f"LocalStack needs a Docker engine: {reason}")
    from testcontainers.localstack import LocalStackContainer

    with LocalStackContainer(image="localstack/localstack:3") as container:
        monkeypatch.setenv("AWS_ENDPOINT_URL", container.get_url())
        yield container


def test_conditional_write_against_localstack(localstack) -> None:
    # Given the template's tables on LocalStack
    from meterbridge.dal import dynamo
    from meterbridge_dev.stack.tables import create_tables
    from tests.support.fixtures import reset_singletons

    reset_singletons()
    create_tables(dynamo.client(), {"IdempotencyTable": "ls-idem"})
    # When the same item is written twice / Then only once
    assert dynamo.put_new("ls-idem", {"pk": "a", "sk": "b"}) is True
    assert dynamo.put_new("ls-idem", {"pk": "a", "sk": "b"}) is False
