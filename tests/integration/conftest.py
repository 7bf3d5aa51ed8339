"""Fixtures of the integration suite: one running service per module, over the real Redis fixture."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from delegation_service.client import DelegationClient
from tests.integration.harness import Harness, start_harness


@pytest.fixture(scope="module", params=["standalone", "cluster"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """The service on the suite's single Redis, then (same tests again) on the real 3-master cluster."""
    mode: str = request.param
    redis = request.getfixturevalue("redis_cluster" if mode == "cluster" else "redis_server")
    running = start_harness(redis.url, redis_mode=mode)
    yield running
    running.server.stop(0)


@pytest.fixture
def client(harness: Harness) -> Iterator[DelegationClient]:
    with harness.client() as c:
        yield c
