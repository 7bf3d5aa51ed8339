"""Fixtures for the edge tests: the real service over the suite's Redis, and edges following it."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator

import pytest

from delegation_service.edge.server import RunningEdge, start_edge
from delegation_service.edge.verifier import EdgeSettings
from devtools.redis_server import RedisServer
from tests.integration.harness import SERVICE_ISSUER, Harness, start_harness

WAIT_SECONDS = 15.0
"""The longest any test waits for the edge to catch up (a bound on the loop, not a timed assertion)."""

EdgeFactory = Callable[..., RunningEdge]


def wait_until(condition: Callable[[], bool], what: str, seconds: float = WAIT_SECONDS) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` if it never does within ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}", pytrace=False)
        time.sleep(0.02)


@pytest.fixture
def service(redis_server: RedisServer) -> Iterator[Harness]:
    """The service on a key prefix of its own, so its revocation stream holds only this test's events."""
    harness = start_harness(redis_server.url, redis_key_prefix=f"edge{secrets.token_hex(4)}")
    yield harness
    harness.server.stop(0)


@pytest.fixture
def start_edge_for(service: Harness) -> Iterator[EdgeFactory]:
    """Start edges following ``service`` (on free loopback ports); every one is stopped afterwards."""
    started: list[RunningEdge] = []

    def start(feed_upstream: str | None = None, **settings: object) -> RunningEdge:
        edge = start_edge(
            EdgeSettings(issuer=SERVICE_ISSUER, **settings),  # type: ignore[arg-type]
            service.address,
            ext_authz_listen="127.0.0.1:0",
            http_listen="127.0.0.1:0",
            feed_upstream=feed_upstream,
        )
        started.append(edge)
        wait_until(
            lambda: edge.verifier.staleness() <= edge.verifier.settings.max_staleness_seconds,
            "the edge's mirror became current",
        )
        return edge

    yield start
    for edge in started:
        edge.stop(0)
