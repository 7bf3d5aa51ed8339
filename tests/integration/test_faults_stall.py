"""A stalled or killed Redis under a running service: calls fail fast, and the outage is logged once.

SPEC §5: while Redis is known unresponsive, calls answer ``UNAVAILABLE`` at once instead of queueing,
and no Redis wait outlasts the caller's deadline. Each test runs its own durable ``redis-server`` and
service, and stops or kills it by signal. The stall scenario is the one ``make faults`` measures
(:mod:`bench.faults`); here it is asserted on.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bench.faults import STALL_CALLERS, call, describe_stall, stall
from tests.integration.test_faults import durable_redis, health, running_service, wait_for_health
from tests.redis_processes import PrivateRedis

__all__ = ["durable_redis"]  # the fixture, re-used

pytestmark = pytest.mark.redis

GUARD_LOGGER = "delegation_service.adapters.store_guard"
NEVER = ("INTERNAL", "UNKNOWN")
"""What a store failure must never turn into."""
FAILED_CALLS_WHILE_DOWN = 20
FROZEN_CALLS = 24


@pytest.fixture
def outage_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.INFO, logger=GUARD_LOGGER):
        yield caplog


def outage_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The outcome of every ``redis_outage`` log record, in order."""
    return [r.outcome for r in caplog.records if getattr(r, "event", "") == "redis_outage"]  # type: ignore[attr-defined]


def test_64_calls_in_flight_on_a_stalled_redis_answer_unavailable_then_succeed_after_sigcont(
    durable_redis: PrivateRedis, outage_log: pytest.LogCaptureFixture
) -> None:
    durable_redis.start()
    with running_service(durable_redis.url) as harness:
        result = stall(durable_redis.freeze, durable_redis.thaw, harness)

    print("\n" + "\n".join(describe_stall(result)))
    assert len(result.while_stalled) >= STALL_CALLERS, "too few calls were made while Redis was stopped"
    assert result.unavailable_share >= 0.95, result.answers
    assert not [o for o in result.outcomes if o.answer in NEVER]
    assert result.first_success_seconds is not None, "no call succeeded after SIGCONT"
    # Detected once, recovered once: two log lines for the whole outage, not one per call.
    assert outage_lines(outage_log) == ["down", "recovered"]
    (recovered,) = [r for r in outage_log.records if getattr(r, "outcome", "") == "recovered"]
    assert recovered.outage_seconds > 0  # type: ignore[attr-defined]


def test_redis_killed_then_restarted_logs_one_line_down_and_one_with_the_outage_when_back(
    durable_redis: PrivateRedis, outage_log: pytest.LogCaptureFixture
) -> None:
    durable_redis.start()
    with running_service(durable_redis.url) as harness, harness.client(timeout=2.0) as client:
        parent = harness.parent()
        child = client.delegate(parent, "billing", ["warehouse.items.r"]).access_token
        durable_redis.kill()
        down = [call(lambda: client.introspect(child)) for _ in range(FAILED_CALLS_WHILE_DOWN)]
        wait_for_health(harness, "NOT_SERVING")
        assert outage_lines(outage_log) == ["down"]

        durable_redis.start()
        wait_for_health(harness, "SERVING")
        assert client.introspect(child).active

    assert {o.answer for o in down} == {"UNAVAILABLE"}
    assert outage_lines(outage_log) == ["down", "recovered"]
    record = outage_log.records[-1]
    print(f"\nkilled and restarted: {record.getMessage()}")
    assert record.node == f"127.0.0.1:{durable_redis.port}"  # type: ignore[attr-defined]


def test_sigstop_then_sigkill_then_restart_is_still_one_outage(
    tmp_path: Path, outage_log: pytest.LogCaptureFixture
) -> None:
    server = PrivateRedis(tmp_path / "redis", {"appendonly": "yes", "maxmemory-policy": "noeviction"}).start()
    try:
        with running_service(server.url) as harness, harness.client(timeout=2.0) as client:
            parent = harness.parent()
            server.freeze()
            wait_for_health(harness, "NOT_SERVING")
            server.process.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
            server.process.wait(timeout=5)  # type: ignore[union-attr]
            assert call(lambda: client.introspect(parent)).answer == "UNAVAILABLE"
            server.start()
            wait_for_health(harness, "SERVING")
            assert client.delegate(parent, "billing", ["warehouse.items.r"]).access_token
    finally:
        server.stop()
    assert outage_lines(outage_log) == ["down", "recovered"]


def test_a_redis_wait_never_outlasts_the_callers_deadline_nor_counts_as_an_outage(
    durable_redis: PrivateRedis, outage_log: pytest.LogCaptureFixture
) -> None:
    # A socket timeout far longer than the calls' deadlines, and more frozen calls than the harness's
    # 16 workers: were the waits not cut to the deadline, they would hold every worker for 30 s, and
    # a health check (served by the same workers) made while Redis is still frozen would queue behind
    # them past its own deadline.
    durable_redis.start()
    with (
        running_service(durable_redis.url, redis_timeout_ms=30_000) as harness,
        harness.client(timeout=0.5) as short,
        harness.client(timeout=5.0) as patient,
    ):
        parent = harness.parent()
        child = patient.delegate(parent, "billing", ["warehouse.items.r"]).access_token
        durable_redis.freeze()
        try:
            with ThreadPoolExecutor(FROZEN_CALLS) as pool:
                frozen = list(pool.map(lambda _: call(lambda: short.introspect(child)), range(FROZEN_CALLS)))
            answered = health(harness)
        finally:
            durable_redis.thaw()
        assert {o.answer for o in frozen} <= {"UNAVAILABLE", "DEADLINE_EXCEEDED"}
        assert answered in ("SERVING", "NOT_SERVING")
        assert patient.introspect(child).active
    # Cut short by their callers' deadlines, those waits say nothing about Redis: no outage logged.
    assert outage_lines(outage_log) == []
