from __future__ import annotations

from meterbridge.resilience import BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_threshold_then_half_opens_and_closes() -> None:
    # Given a breaker with a threshold of 3 and a 10 s reset
    clock = Clock()
    changes: list[BreakerState] = []
    breaker = CircuitBreaker(
        "x",
        failure_threshold=3,
        reset_timeout_s=10,
        clock=clock,
        on_change=lambda _, s: changes.append(s),
    )
    # When three calls fail
    for _ in range(3):
        assert breaker.allow()
        breaker.record_failure()
    # Then it is open and refuses calls
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    # When the reset timeout passes, exactly one trial call is let through
    clock.now = 10.0
    assert breaker.allow() and not breaker.allow()
    assert breaker.state is BreakerState.HALF_OPEN
    # And a successful trial closes it
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]


def test_failed_trial_reopens_for_a_full_timeout() -> None:
    # Given an open breaker whose timeout passed
    clock = Clock()
    breaker = CircuitBreaker("x", failure_threshold=1, reset_timeout_s=5, clock=clock)
    breaker.record_failure()
    clock.now = 5.0
    assert breaker.allow()
    # When the trial fails
    breaker.record_failure()
    # Then it is open again until another full timeout
    assert breaker.state is BreakerState.OPEN
    assert breaker.seconds_until_trial() == 5.0
    clock.now = 9.9
    assert not breaker.allow()


def test_success_resets_the_failure_count() -> None:
    # Given two failures, then a success
    breaker = CircuitBreaker("x", failure_threshold=3)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    # When two more failures happen / Then it stays closed (not consecutive)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
