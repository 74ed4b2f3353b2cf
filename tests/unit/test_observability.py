from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from meterbridge.observability import logger, tenant_context


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """The JSON lines the Powertools logger writes, through its own formatter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logger.registered_formatter)
    logger._logger.addHandler(handler)
    yield stream
    logger._logger.removeHandler(handler)


def test_tenant_id_is_on_every_log_line_inside_the_context(log_stream: io.StringIO) -> None:
    # Given a tenant's request context
    with tenant_context("t_0123456789abcdef"):
        # When two lines are logged inside it
        logger.info("one")
        logger.info("two")
    logger.info("after")
    # Then both carry the tenant id and the line after does not
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    by_msg = {line["message"]: line for line in lines}
    assert by_msg["one"]["tenant_id"] == by_msg["two"]["tenant_id"] == "t_0123456789abcdef"
    assert "tenant_id" not in by_msg["after"]
