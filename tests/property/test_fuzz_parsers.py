"""Fuzzing the two parsers that read untrusted bytes: the CloudEvent body and Stripe-Signature.

Hypothesis generates the inputs (atheris is not installed; hypothesis's generators, with the
shapes below and explicit examples of known hard cases, cover what a byte fuzzer would for
parsers of this size). No network: both parsers are pure functions.

- ``parse.parse_body`` + ``parse.validate``: any bytes, any JSON. Only the domain errors
  ``ValidationFailed`` (400) and ``PayloadTooLarge`` (413) may come out; whatever is accepted
  is a valid CloudEvent carrying the server's source for the tenant.
- ``logic.stripe.verify.verify``: any header, any body. Only ``InvalidSignature`` (400) may come
  out; a correctly signed body always passes; a one-byte change to a signed body never does.
"""

from __future__ import annotations

import json
import string
import time
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import stripe
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from meterbridge.errors import InvalidSignature, PayloadTooLarge, ValidationFailed
from meterbridge.logic.ingest import parse
from meterbridge.logic.stripe.verify import verify
from meterbridge.models.cloudevent import usage_source
from meterbridge.plans import catalog

TENANT = "t_fuzz0000000000"
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
DOMAIN_ERRORS = (ValidationFailed, PayloadTooLarge)

# -- CloudEvent bodies ---------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),  # NaN and ±Infinity included: Python's json writes and reads them
    st.text(max_size=40),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=25,
)
times = st.one_of(
    st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.timezones()
    ).map(lambda d: d.isoformat()),
    st.datetimes(
        min_value=(NOW - timedelta(days=40)).replace(tzinfo=None),
        max_value=(NOW + timedelta(minutes=10)).replace(tzinfo=None),
    ).map(lambda d: d.isoformat() + "Z"),
    st.just((NOW - timedelta(minutes=1)).isoformat().replace("+00:00", "Z")),
    st.text(max_size=30),
    json_scalars,
)
ids = st.one_of(st.text(min_size=0, max_size=130), st.sampled_from(["a", "evt-1", "evt-2"]))
types = st.one_of(
    st.sampled_from(["api.call", "query", "tokens.used", "", " "]), st.text(max_size=20)
)
# Event-shaped objects, so a good share of the examples is accepted and checked.
event_objects = st.fixed_dictionaries(
    {"id": ids, "type": types},
    optional={
        "time": times,
        "subject": st.one_of(st.text(max_size=40), json_scalars),
        "data": st.one_of(
            st.dictionaries(st.text(max_size=10), json_values, max_size=4), json_values
        ),
        "source": st.text(max_size=40),
        "specversion": st.sampled_from(["1.0", "0.3", 1]),
        "datacontenttype": st.sampled_from(["application/json", "text/plain"]),
        "extra": json_values,
    },
)
# Mostly valid events: the checks on accepted events need many accepted examples.
in_window = st.datetimes(
    min_value=(NOW - timedelta(days=34)).replace(tzinfo=None),
    max_value=(NOW + timedelta(minutes=4)).replace(tzinfo=None),
    timezones=st.just(UTC),
).map(lambda d: d.isoformat().replace("+00:00", "Z"))
likely_events = st.fixed_dictionaries(
    {
        "id": st.one_of(st.text(string.printable.strip(), min_size=1, max_size=20), ids),
        "type": st.sampled_from(["api.call", "query", "tokens.used", "x.y"]),
    },
    optional={
        "time": in_window,
        "subject": st.text(min_size=1, max_size=30),
        "data": st.dictionaries(st.text(max_size=10), json_values, max_size=4),
    },
)
bodies = st.one_of(
    likely_events,
    st.lists(likely_events, min_size=1, max_size=6),
    event_objects,
    st.lists(event_objects, max_size=6),
    json_values,
)


def _body_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


def _is_clean_string(value: str) -> bool:
    """CloudEvents 1.0 String: no control characters (Cc), surrogates (Cs), noncharacters."""
    return not any(
        unicodedata.category(c) in ("Cc", "Cs")
        or (0xFDD0 <= ord(c) <= 0xFDEF)
        or (ord(c) & 0xFFFE) == 0xFFFE
        for c in value
    )


def _accept(raw: bytes) -> parse.Batch | None:
    """The validated batch, or None when the body is refused with a domain error."""
    try:
        return parse.validate(TENANT, parse.parse_body(raw), now=NOW)
    except DOMAIN_ERRORS:
        return None


@FUZZ
@given(raw=st.one_of(st.binary(max_size=2000), bodies.map(_body_bytes)))
@example(raw=b"")
@example(raw=b"\xff\xfe{\x00")
@example(raw=b"[]")
@example(raw=b"[" * 100_000 + b"]" * 100_000)  # deep nesting, well under the 1 MB limit
@example(raw=b'{"id": "x", "type": "' + b"a" * 70_000 + b'"}')
@example(raw=b"[" + b"{}," * 1000 + b"{}]")
def test_any_body_is_accepted_or_refused_with_a_domain_error(raw: bytes) -> None:
    # Given arbitrary bytes as a POST /v1/events body
    # When parsed and validated
    try:
        batch = parse.validate(TENANT, parse.parse_body(raw), now=NOW)
    except DOMAIN_ERRORS:
        return
    # Then nothing but a domain error escapes, and an accepted batch is not empty
    assert batch.events


@FUZZ
@given(body=bodies)
@example(body={"id": "evt-1", "type": "api.call", "source": "//meterbridge/tenants/other"})
@example(body=[{"id": "a", "type": "q"}, {"id": "a", "type": "q"}])
def test_what_is_accepted_is_a_cloudevent_with_the_servers_source(body: Any) -> None:
    # Given an arbitrary JSON body
    raw = _body_bytes(body)
    # When it is accepted
    batch = _accept(raw)
    if batch is None:
        return
    # Then each event is a CloudEvents 1.0 event of this tenant, counted under its meter
    sent = body if isinstance(body, list) else [body]
    assert len(batch.events) + batch.repeats == len(sent)
    assert len({e.id for e in batch.events}) == len(batch.events)
    for event, fed in zip(batch.events, batch.feeds, strict=True):
        assert event.specversion == "1.0"
        assert event.source == usage_source(TENANT)
        assert isinstance(event.id, str) and 0 < len(event.id) <= 128
        assert isinstance(event.type, str) and event.type
        assert event.subject == TENANT
        assert event.time.endswith("Z")
        moment = datetime.fromisoformat(event.time.replace("Z", "+00:00"))
        assert NOW - parse.MAX_AGE <= moment <= NOW + parse.MAX_AHEAD
        assert isinstance(event.data, dict)
        assert [f.meter for f in fed] == list(catalog().meters_for_type(event.type))


@FUZZ
@given(body=bodies)
@example(body={"id": "evt-1", "type": "api.call", "data": {"n": float("nan")}})
@example(body={"id": "evt-1", "type": "api.call", "data": {"n": float("inf")}})
@example(body={"id": "evt-1", "type": "api.call", "data": {"\ud800": 1}})
def test_what_is_accepted_serialises_as_strict_utf8_json(body: Any) -> None:
    # Given an arbitrary JSON body (Python's json also reads NaN, Infinity, lone surrogates)
    batch = _accept(_body_bytes(body))
    if batch is None:
        return
    # Then every accepted event is RFC 8259 JSON in UTF-8, as OpenMeter and NATS require
    for event in batch.events:
        json.dumps(event.wire(), allow_nan=False).encode("utf-8")


@FUZZ
@given(body=bodies)
@example(body={"id": "evt-1", "type": "api.call", "subject": "customer\n42"})
@example(body={"id": "evt-1", "type": "api.call", "subject": "\ud800"})
def test_what_is_accepted_has_clean_context_attributes(body: Any) -> None:
    # Given an arbitrary JSON body
    batch = _accept(_body_bytes(body))
    if batch is None:
        return
    # Then id, type and subject are CloudEvents Strings (no control characters, surrogates)
    for event in batch.events:
        for attribute in (event.id, event.type, event.subject or ""):
            assert _is_clean_string(attribute), repr(attribute)


# -- Stripe-Signature ----------------------------------------------------------------------

SECRET = "whsec_fuzz_current"
OTHER = "whsec_fuzz_previous"
secrets_ = st.text(string.ascii_letters + string.digits + "_", min_size=1, max_size=24).map(
    lambda s: f"whsec_{s}"
)
header_parts = st.one_of(
    st.tuples(st.sampled_from(["t", "v1", "v0", " t", "t ", "", "T", "v1 "]), st.text(max_size=70)),
    st.tuples(st.just("t"), st.integers(-(2**40), 2**40).map(str)),
    st.tuples(st.just("v1"), st.text("0123456789abcdef", min_size=64, max_size=64)),
).map(lambda kv: f"{kv[0]}={kv[1]}")
headers = st.one_of(
    st.text(max_size=200),
    st.lists(st.one_of(header_parts, st.text(max_size=20)), max_size=6).map(",".join),
)


def _sign(body: bytes, secret: str, timestamp: int | None = None) -> str:
    return stripe.WebhookSignature.generate_signature_header(
        body.decode("utf-8"), secret, timestamp=timestamp or int(time.time())
    )


def _verify_or_invalid(body: bytes, header: str | None, secrets: list[str]) -> bool:
    """True if verified; False on ``InvalidSignature``; anything else propagates."""
    try:
        verify(body, header, secrets)
    except InvalidSignature:
        return False
    return True


@FUZZ
@given(
    header=headers, body=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode))
)
@example(header="t=1,v1=\u00e9", body=b"{}")  # a non-ASCII signature (Latin-1 header bytes)
@example(header="t=notanumber,v1=00", body=b"{}")
@example(header="t=1,v1", body=b"{}")
@example(header=",,,=,=", body=b"\xff")
def test_any_header_and_body_is_verified_or_refused_as_invalid(header: str, body: bytes) -> None:
    # Given an arbitrary Stripe-Signature header and body
    # When verified / Then only InvalidSignature can come out (a forged request is a 400)
    assert _verify_or_invalid(body, header, [SECRET, OTHER]) is False


@FUZZ
@given(junk=st.lists(header_parts, min_size=1, max_size=3), body=st.text(max_size=200))
@example(junk=[" t=abc"], body="{}")
def test_a_valid_signature_among_junk_header_parts_never_crashes(
    junk: list[str], body: str
) -> None:
    # Given a correctly signed body whose header carries extra, malformed parts before it
    raw = body.encode()
    header = ",".join([*junk, _sign(raw, SECRET)])
    # When verified / Then it is accepted or refused as invalid, never an unexpected error
    _verify_or_invalid(raw, header, [SECRET])


@FUZZ
@given(
    body=st.text(max_size=500),
    secrets=st.lists(secrets_, min_size=1, max_size=3, unique=True),
    data=st.data(),
    offset=st.integers(-280, 280),
)
def test_a_correctly_signed_body_always_passes(
    body: str, secrets: list[str], data: st.DataObject, offset: int
) -> None:
    # Given any UTF-8 body signed now (within the tolerance) by one of the rotation's secrets
    raw = body.encode("utf-8")
    secret = data.draw(st.sampled_from(secrets))
    header = _sign(raw, secret, int(time.time()) + offset)
    # When verified / Then it passes
    assert _verify_or_invalid(raw, header, secrets) is True


@FUZZ
@given(body=st.text(min_size=1, max_size=500), data=st.data())
def test_any_one_byte_change_to_a_signed_body_fails(body: str, data: st.DataObject) -> None:
    # Given a signed body
    raw = body.encode("utf-8")
    header = _sign(raw, SECRET)
    # When one byte is changed to another value
    index = data.draw(st.integers(0, len(raw) - 1))
    value = data.draw(st.integers(0, 255).filter(lambda b: b != raw[index]))
    tampered = raw[:index] + bytes([value]) + raw[index + 1 :]
    # Then verification fails with InvalidSignature
    assert _verify_or_invalid(tampered, header, [SECRET, OTHER]) is False


def test_the_fuzz_targets_accept_a_plain_valid_event_and_signature() -> None:
    # Given a plain event and a plainly signed body (the fuzz properties are not vacuous)
    raw = b'{"id": "evt-1", "type": "api.call", "data": {"n": 1}}'
    # When / Then
    batch = _accept(raw)
    assert batch is not None and [e.id for e in batch.events] == ["evt-1"]
    assert _verify_or_invalid(raw, _sign(raw, SECRET), [SECRET]) is True


@pytest.mark.parametrize("raw", [b"NaN", b"[1]", b'"x"', b"null"])
def test_non_object_bodies_are_refused_as_invalid(raw: bytes) -> None:
    # Given a JSON body that is not an event / When validated / Then a 400 domain error
    with pytest.raises(ValidationFailed):
        parse.validate(TENANT, parse.parse_body(raw), now=NOW)
