"""Fixtures of the integration suite: one running service per module, over the real Redis fixture."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from delegation_service.client import DelegationClient
from tests.integration.harness import Harness, start_harness


@pytest.fixture(scope="module")
def harness(redis_server) -> Iterator[Harness]:
    running = start_harness(redis_server.url)
    yield running
    running.server.stop(0)


@pytest.fixture
def client(harness: Harness) -> Iterator[DelegationClient]:
    with harness.client() as c:
        yield c
