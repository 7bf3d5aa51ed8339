"""The DPoP replay cache contract: the in-memory and the Redis implementation pass the same suite, the
Redis one against the suite's real redis-server (expiry by Redis itself, on its own clock)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from delegation_service.adapters.dpop_replay import MemoryProofReplayCache, RedisProofReplayCache
from delegation_service.domain.dpop import ProofReplayCache
from delegation_service.domain.errors import StoreUnavailable


class WallClock:
    def now(self) -> int:
        return int(time.time())


@pytest.fixture(params=["memory", "redis"])
def cache(request: pytest.FixtureRequest) -> Iterator[ProofReplayCache]:
    if request.param == "memory":
        yield MemoryProofReplayCache(WallClock())
        return
    client: redis.Redis = request.getfixturevalue("redis_client")
    yield RedisProofReplayCache(client, "contract")


def test_a_proof_is_accepted_once(cache: ProofReplayCache) -> None:
    until = int(time.time()) + 60
    assert cache.first_use("key-a", "jti-1", until) is True
    assert cache.first_use("key-a", "jti-1", until) is False
    assert cache.first_use("key-a", "jti-1", until) is False


def test_the_same_jti_of_another_key_is_another_proof(cache: ProofReplayCache) -> None:
    until = int(time.time()) + 60
    assert cache.first_use("key-a", "jti-2", until) is True
    assert cache.first_use("key-b", "jti-2", until) is True


def test_a_proof_is_forgotten_once_it_expires(cache: ProofReplayCache) -> None:
    until = int(time.time()) + 1
    assert cache.first_use("key-a", "jti-3", until) is True
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.25)
        if cache.first_use("key-a", "jti-3", int(time.time()) + 60):
            return
    pytest.fail("the expired proof was never forgotten")


def test_memory_stays_bounded_and_fails_closed_when_full() -> None:
    cache = MemoryProofReplayCache(WallClock(), max_entries=2)
    until = int(time.time()) + 60
    assert cache.first_use("k", "1", until) and cache.first_use("k", "2", until)
    with pytest.raises(StoreUnavailable):
        cache.first_use("k", "3", until)


def test_redis_unreachable_fails_closed(unused_loopback_port: int) -> None:
    client = redis.Redis(host="127.0.0.1", port=unused_loopback_port, socket_connect_timeout=0.2)
    with pytest.raises(StoreUnavailable):
        RedisProofReplayCache(client, "contract").first_use("k", "1", int(time.time()) + 60)
