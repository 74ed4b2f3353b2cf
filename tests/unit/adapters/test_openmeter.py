"""The OpenMeter client: contract headers, retries, Retry-After, circuit breaker, deadline.

httpx's in-memory MockTransport stands in for OpenMeter: no network in unit tests.
"""

from __future__ import annotations

import time

import httpx
import pytest

from meterbridge.adapters.openmeter import (
    OpenMeterClient,
    OpenMeterMisconfigured,
    OpenMeterRejected,
    OpenMeterUnavailable,
    RetryPolicy,
)
from meterbridge.resilience import BreakerState, CircuitBreaker

EVENT = '{"specversion":"1.0","id":"e1","source":"//s","type":"t","subject":"c"}'


def client_for(
    answers: list[httpx.Response | Exception],
    seen: list[httpx.Request],
    sleeps: list[float],
    **kw,
) -> OpenMeterClient:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return OpenMeterClient(
        "http://openmeter.test",
        "om_secret",
        transport=httpx.MockTransport(handler),
        sleep=sleeps.append,
        jitter=kw.pop("jitter", lambda lo, hi: hi),
        retry=kw.pop("retry", RetryPolicy(max_attempts=4, backoff_base_s=0.1, backoff_cap_s=1.0)),
        **kw,
    )


def test_posts_exactly_the_batch_content_type_and_bearer_key():
    # Given
    seen: list[httpx.Request] = []
    client = client_for([httpx.Response(204)], seen, [])

    # When
    attempts = client.send_batch([EVENT, EVENT])

    # Then
    assert attempts == 1
    request = seen[0]
    assert request.url.path == "/api/v1/events"
    assert request.headers["content-type"] == "application/cloudevents-batch+json"
    assert request.headers["authorization"] == "Bearer om_secret"
    assert request.content == f"[{EVENT},{EVENT}]".encode()


def test_retries_5xx_and_timeouts_with_exponential_backoff():
    # Given
    sleeps: list[float] = []
    answers = [
        httpx.Response(500),
        httpx.ReadTimeout("slow"),
        httpx.Response(502),
        httpx.Response(204),
    ]
    client = client_for(answers, [], sleeps)

    # When
    attempts = client.send_batch([EVENT])

    # Then: full-jitter ceilings double each time (jitter pinned to the ceiling here)
    assert attempts == 4
    assert sleeps == [0.1, 0.2, 0.4]


def test_full_jitter_draws_between_zero_and_the_ceiling():
    # Given
    draws: list[tuple[float, float]] = []

    def jitter(lo: float, hi: float) -> float:
        draws.append((lo, hi))
        return lo

    client = client_for([httpx.Response(503), httpx.Response(204)], [], [], jitter=jitter)

    # When
    client.send_batch([EVENT])

    # Then
    assert draws == [(0.0, 0.1)]


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_a_floor_on_429_and_503(status):
    # Given
    sleeps: list[float] = []
    answers = [httpx.Response(status, headers={"Retry-After": "3"}), httpx.Response(204)]
    client = client_for(answers, [], sleeps)

    # When
    client.send_batch([EVENT])

    # Then
    assert sleeps == [3.0]


def test_400_is_a_rejection_with_openmeters_answer_and_no_retry():
    # Given
    seen: list[httpx.Request] = []
    problem = {"status": 400, "detail": "bad event"}
    client = client_for([httpx.Response(400, json=problem)], seen, [])

    # When
    with pytest.raises(OpenMeterRejected) as caught:
        client.send_batch([EVENT])

    # Then
    assert len(seen) == 1
    assert caught.value.http_status == 400 and caught.value.details == problem


@pytest.mark.parametrize("status", [401, 403, 404, 415])
def test_configuration_errors_are_not_retried(status):
    # Given
    seen: list[httpx.Request] = []
    client = client_for([httpx.Response(status)], seen, [])

    # When / Then
    with pytest.raises(OpenMeterMisconfigured):
        client.send_batch([EVENT])
    assert len(seen) == 1


def test_exhausted_retries_raise_unavailable_with_the_attempts():
    # Given
    client = client_for([httpx.Response(500)] * 4, [], [])

    # When
    with pytest.raises(OpenMeterUnavailable) as caught:
        client.send_batch([EVENT])

    # Then
    assert caught.value.attempts == 4


def test_circuit_opens_after_failures_and_refuses_without_a_request():
    # Given
    seen: list[httpx.Request] = []
    breaker = CircuitBreaker("om", failure_threshold=2, reset_timeout_s=60)
    client = client_for([httpx.Response(500)] * 2, seen, [], breaker=breaker)

    # When
    with pytest.raises(OpenMeterUnavailable):
        client.send_batch([EVENT])
    with pytest.raises(OpenMeterUnavailable, match="circuit open"):
        client.send_batch([EVENT])

    # Then
    assert breaker.state is BreakerState.OPEN
    assert len(seen) == 2


def test_no_wait_runs_past_the_deadline():
    # Given: OpenMeter asks for 30 s, the caller has 2 s
    sleeps: list[float] = []
    answers: list[httpx.Response | Exception] = [httpx.Response(429, headers={"Retry-After": "30"})]
    client = client_for(answers, [], sleeps)

    # When
    with pytest.raises(OpenMeterUnavailable, match="deadline"):
        client.send_batch([EVENT], deadline=time.monotonic() + 2.0)

    # Then
    assert sleeps == []


def test_retry_after_as_an_http_date_is_understood():
    # Given
    from email.utils import formatdate

    sleeps: list[float] = []
    # A minute ahead: whole seconds and a slow run take at most a few of them off
    when = formatdate(time.time() + 60, usegmt=True)
    client = client_for(
        [httpx.Response(503, headers={"Retry-After": when}), httpx.Response(204)], [], sleeps
    )

    # When
    client.send_batch([EVENT])

    # Then
    assert 40.0 <= sleeps[0] <= 60.5
