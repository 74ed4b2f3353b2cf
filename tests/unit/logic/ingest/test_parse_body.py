"""logic/ingest/parse.parse_body: text that cannot be stored as UTF-8 is refused however it is
spelled (the check runs only on bodies that may hold it, so each spelling is pinned here)."""

from __future__ import annotations

import pytest

from meterbridge.errors import ValidationFailed
from meterbridge.logic.ingest.parse import parse_body

LONE = '{"id":"e1","type":"api.call","data":{"s":"\\ud800"}}'


@pytest.mark.parametrize(
    "raw",
    [
        LONE.encode(),  # an escape
        LONE.replace("\\ud800", "\ud800").encode("utf-8", "surrogatepass"),
        LONE.encode("utf-16-le"),  # the escape in UTF-16 (no backslash-u byte pair)
        LONE.encode("utf-32"),
    ],
    ids=["escape", "utf8-bytes", "utf16", "utf32"],
)
def test_a_lone_surrogate_is_refused_in_every_spelling(raw: bytes) -> None:
    with pytest.raises(ValidationFailed, match="not valid Unicode"):
        parse_body(raw)


def test_escapes_of_real_characters_pass() -> None:
    body = b'{"id":"e1","type":"api.call","data":{"s":"\\u00e9\\ud83d\\ude00"}}'
    assert parse_body(body) == [{"id": "e1", "type": "api.call", "data": {"s": "é😀"}}]
