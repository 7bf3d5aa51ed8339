"""The circuit breaker in front of each Redis node: its states, its one probe, its two log lines."""

from __future__ import annotations

import logging

import pytest

from delegation_service.adapters.store_guard import BreakerState, CircuitBreaker, StoreGuard, StoreRefused

COOLDOWN = 0.5


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker("127.0.0.1:6379", failures=3, cooldown_seconds=COOLDOWN, clock=clock)


def trip(breaker: CircuitBreaker, owner: object = "a") -> None:
    for _ in range(3):
        breaker.failed(owner, "TimeoutError: Timeout reading")


def test_it_opens_after_the_consecutive_failures_only(breaker: CircuitBreaker) -> None:
    breaker.failed("a", "x")
    breaker.failed("a", "x")
    breaker.succeeded()  # an answer in between starts the count again
    breaker.failed("a", "x")
    breaker.failed("a", "x")
    assert breaker.state is BreakerState.CLOSED
    breaker.admit("a")
    breaker.failed("a", "x")
    assert state_of(breaker) is BreakerState.OPEN


def state_of(breaker: CircuitBreaker) -> BreakerState:
    """The state, read afresh (mypy would keep the narrowing of an earlier assertion)."""
    return breaker.state


def test_an_open_breaker_refuses_every_caller_until_the_cooldown(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    trip(breaker)
    clock.now += COOLDOWN / 2
    for owner in ("a", "b", "c"):
        with pytest.raises(StoreRefused):
            breaker.admit(owner)


def test_after_the_cooldown_one_probe_goes_and_the_others_are_refused(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    trip(breaker)
    clock.now += COOLDOWN
    breaker.admit("probe")
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.admit("probe")  # the probe's own follow-up commands (reconnect, handshake)
    with pytest.raises(StoreRefused):
        breaker.admit("other")


def test_a_probe_that_answers_closes_it(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.now += COOLDOWN
    breaker.admit("probe")
    breaker.succeeded()
    assert breaker.state is BreakerState.CLOSED
    breaker.admit("other")


def test_a_probe_that_fails_opens_it_for_another_cooldown(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.now += COOLDOWN
    breaker.admit("probe")
    breaker.failed("probe", "x")
    assert breaker.state is BreakerState.OPEN
    clock.now += COOLDOWN / 2
    with pytest.raises(StoreRefused):
        breaker.admit("probe")


def test_an_inconclusive_probe_lets_the_next_caller_probe(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.now += COOLDOWN
    breaker.admit("probe")
    breaker.inconclusive("probe")  # its wait was cut short by its caller's deadline
    breaker.admit("next")
    with pytest.raises(StoreRefused):
        breaker.admit("third")


def test_late_failures_of_calls_in_flight_do_not_reopen_or_log_again(
    breaker: CircuitBreaker, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="delegation_service.adapters.store_guard"):
        trip(breaker)
        for _ in range(60):  # the other calls that were waiting when it stalled
            breaker.failed("b", "x")
        clock.now += COOLDOWN
        breaker.admit("probe")
        breaker.failed("probe", "x")
        clock.now += 2.0
        breaker.admit("probe")
        breaker.succeeded()
    outage = [(r.outcome, getattr(r, "outage_seconds", None)) for r in caplog.records]  # type: ignore[attr-defined]
    assert outage == [("down", None), ("recovered", 2.5)]
    assert all(r.event == "redis_outage" for r in caplog.records)  # type: ignore[attr-defined]


def test_the_guard_keeps_one_breaker_per_node(clock: FakeClock) -> None:
    guard = StoreGuard(failures=1, cooldown_seconds=COOLDOWN, clock=clock)
    guard.breaker("a:1").failed("x", "down")
    assert guard.breaker("a:1") is guard.breaker("a:1")
    guard.breaker("b:2").admit("x")
    assert guard.open_nodes() == ["a:1"]
