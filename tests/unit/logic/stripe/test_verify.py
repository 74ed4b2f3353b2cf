"""Signature verification with Stripe's real scheme (stripe's own header generator); no network."""

from __future__ import annotations

import time

import pytest
import stripe

from meterbridge.errors import InvalidSignature
from meterbridge.logic.stripe.verify import WebhookMisconfigured, parse_event, verify
from meterbridge_dev.stripe.reconcile import parse_since

BODY = b'{\n  "id": "evt_1", "object": "event", "type": "invoice.paid"\n}'
SECRET = "whsec_unit_current"
OLD = "whsec_unit_previous"


def header(body: bytes, secret: str, t: int | None = None) -> str:
    return stripe.WebhookSignature.generate_signature_header(
        body.decode(), secret, timestamp=t if t is not None else int(time.time())
    )


def test_a_valid_signature_passes() -> None:
    # Given a body signed now with the current secret / When verified / Then no error
    verify(BODY, header(BODY, SECRET), [SECRET, OLD])


def test_either_secret_of_a_rotation_passes() -> None:
    # Given a body signed with the previous secret / When verified against both / Then it passes
    verify(BODY, header(BODY, OLD), [SECRET, OLD])


@pytest.mark.parametrize("offset", [-301, 301, -3600, 86400])
def test_timestamps_outside_300_seconds_either_way_fail(offset: int) -> None:
    # Given a correctly signed body dated outside the tolerance
    now = time.time()
    signature = header(BODY, SECRET, int(now) + offset)
    # When verified / Then it is refused
    with pytest.raises(InvalidSignature):
        verify(BODY, signature, [SECRET], now=now)


# 60 s inside the edges: the library checks staleness against its own clock, which moves on
# while a loaded machine runs the test.
@pytest.mark.parametrize("offset", [-240, 0, 240])
def test_timestamps_inside_300_seconds_pass(offset: int) -> None:
    now = time.time()
    # Given a signature dated within 300 s / When verified / Then it passes
    verify(BODY, header(BODY, SECRET, int(now) + offset), [SECRET], now=now)


@pytest.mark.parametrize(
    "signature",
    [None, "", "v1=abc", "t=1", "t=notanumber,v1=00", "garbage"],
)
def test_missing_or_malformed_headers_fail(signature: str | None) -> None:
    # Given no usable header / When verified / Then it is refused as an invalid signature
    with pytest.raises(InvalidSignature):
        verify(BODY, signature, [SECRET])


def test_a_tampered_or_non_utf8_body_fails() -> None:
    # Given a signature over the original body
    signature = header(BODY, SECRET)
    # When one byte changes (to text, or to invalid UTF-8) / Then both are refused
    with pytest.raises(InvalidSignature):
        verify(BODY.replace(b"paid", b"paId"), signature, [SECRET])
    with pytest.raises(InvalidSignature):
        verify(BODY[:-1] + b"\xff", signature, [SECRET])


def test_no_secret_is_a_configuration_error() -> None:
    # Given no configured secret / When verifying / Then a 500-class error, not a 400
    with pytest.raises(WebhookMisconfigured) as info:
        verify(BODY, header(BODY, SECRET), [])
    assert info.value.status == 500


def test_a_body_that_is_not_an_event_is_invalid() -> None:
    from meterbridge.errors import ValidationFailed

    # Given verified bytes that are not a Stripe event / When parsed / Then 400
    for raw in (b"[]", b"{}", b"not json", b'{"id": "x", "object": "event"}'):
        with pytest.raises(ValidationFailed):
            parse_event(raw)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 2592000), ("12h", 43200), ("90m", 5400), ("45", 45), ("400d", 2592000)],
)
def test_parse_since(text: str, seconds: int) -> None:
    # Given a duration / When parsed / Then seconds, capped at Stripe's 30 days of events
    assert parse_since(text) == seconds
