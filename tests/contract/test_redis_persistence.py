"""The Redis registry's persistence check: the settings an acknowledged revocation needs (SPEC §5).

Each test runs its own ``redis-server`` (or restores what it changed on the shared cluster), because it
changes the very settings the other tests rely on.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from delegation_service.adapters.redis import (
    PersistenceProblem,
    RedisRegistry,
    UnsafePersistence,
    check_persistence_at_startup,
    persistence_problems,
)
from delegation_service.domain.errors import StoreUnavailable
from delegation_service.domain.revocation import HorizonKey, HorizonKind
from tests.redis_processes import DURABLE, PrivateRedis, RedisClusterProcesses

pytestmark = pytest.mark.redis


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A durable private server; tests change its settings at will."""
    server = PrivateRedis(tmp_path / "redis", dict(DURABLE)).start()
    yield server
    server.stop()


@pytest.fixture
def client(private_redis: PrivateRedis) -> Iterator[redis.Redis]:
    c = private_redis.client()
    yield c
    c.close()


def settings_of(problems: list[PersistenceProblem]) -> list[tuple[str, str]]:
    return [(p.setting, p.found) for p in problems]


def test_a_durable_server_has_no_problems(client: redis.Redis) -> None:
    assert persistence_problems(client) == []


def test_each_unsafe_setting_is_named_with_what_was_found(client: redis.Redis) -> None:
    client.config_set("appendonly", "no")
    client.config_set("maxmemory-policy", "allkeys-lru")

    problems = persistence_problems(client)

    assert settings_of(problems) == [("appendonly", "no"), ("maxmemory-policy", "allkeys-lru")]
    assert "appendonly is 'no', revocations need 'yes'" in str(problems[0])


def test_a_server_that_hides_config_cannot_be_shown_safe(tmp_path: Path) -> None:
    # As on managed Redis services: CONFIG renamed away.
    server = PrivateRedis(tmp_path / "redis", DURABLE, ("--rename-command", "CONFIG", '""')).start()
    client = server.client()
    try:
        problems = persistence_problems(client)
    finally:
        client.close()
        server.stop()

    assert settings_of(problems) == [("appendonly", ""), ("maxmemory-policy", "")]
    assert "CONFIG GET is disabled or not permitted" in str(problems[0])


def unreachable(port: int) -> redis.Redis:
    return redis.Redis(port=port, socket_connect_timeout=0.2, socket_timeout=0.2, retry=Retry(NoBackoff(), 0))


def test_an_unreachable_server_is_unavailable_not_safe(unused_loopback_port: int) -> None:
    client = unreachable(unused_loopback_port)
    with pytest.raises(StoreUnavailable):
        persistence_problems(client)
    client.close()


def test_every_master_of_a_cluster_is_checked(redis_cluster: RedisClusterProcesses) -> None:
    cluster = redis_cluster.client()
    nodes = redis_cluster.node_clients()
    for node in nodes:
        node.config_set("appendonly", "yes")
    try:
        assert persistence_problems(cluster) == []
        nodes[1].config_set("maxmemory-policy", "volatile-lru")

        problems = persistence_problems(cluster)

        assert [(p.node, p.setting, p.found) for p in problems] == [
            (f"127.0.0.1:{redis_cluster.nodes[1].port}", "maxmemory-policy", "volatile-lru")
        ]
    finally:
        for node in nodes:
            node.config_set("appendonly", "no")
            node.config_set("maxmemory-policy", "noeviction")
        cluster.close()


# -- the registry that requires it ------------------------------------------------------------------


def test_a_registry_that_requires_persistence_fails_closed_until_it_is_fixed(
    client: redis.Redis,
) -> None:
    client.config_set("appendonly", "no")
    registry = RedisRegistry(client, prefix="p", require_persistence=True)
    key = HorizonKey(HorizonKind.CLIENT, "c")
    t = int(time.time())

    assert registry.ping() is False
    with pytest.raises(StoreUnavailable, match="durable"):
        registry.revoke_chain(uuid.uuid4().hex, t + 60, t)
    with pytest.raises(StoreUnavailable):
        registry.events(None, 10)
    assert client.dbsize() == 0  # nothing was written

    client.config_set("appendonly", "yes")
    assert registry.ping() is True  # the health probe re-reads the settings
    assert registry.revoke_horizon(key, t, t).kind == "client"

    client.config_set("maxmemory-policy", "allkeys-random")
    assert registry.ping() is False
    with pytest.raises(StoreUnavailable):
        registry.revoke_horizon(key, t, t)


def test_a_registry_that_met_redis_down_checks_before_its_first_call(
    private_redis: PrivateRedis, client: redis.Redis
) -> None:
    private_redis.stop()
    own = private_redis.client()
    registry = RedisRegistry(own, prefix="p", require_persistence=True)
    try:
        with pytest.raises(StoreUnavailable):
            registry.check_persistence()

        private_redis.settings["appendonly"] = "no"
        private_redis.start()
        with pytest.raises(StoreUnavailable, match="durable"):
            registry.events(None, 10)

        client.config_set("appendonly", "yes")
        assert registry.ping() is True
        assert list(registry.events(None, 10)) == []
    finally:
        own.close()


def test_a_registry_without_the_requirement_never_reads_config(client: redis.Redis) -> None:
    client.config_set("appendonly", "no")
    registry = RedisRegistry(client, prefix="p")
    client.config_resetstat()

    assert registry.ping() is True
    registry.events(None, 10)

    assert "cmdstat_config|get" not in client.info("commandstats")


# -- start-up ---------------------------------------------------------------------------------------


def test_start_up_refuses_an_unsafe_redis_naming_the_settings_and_the_override(
    client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    client.config_set("appendonly", "no")
    registry = RedisRegistry(client, require_persistence=True)

    with pytest.raises(UnsafePersistence) as refused, caplog.at_level(logging.ERROR):
        check_persistence_at_startup(registry, allow_unsafe=False)

    message = str(refused.value)
    assert "appendonly is 'no'" in message and "redis.allow_unsafe_persistence = true" in message
    assert any(r.getMessage().startswith("refusing to serve") for r in caplog.records)


def test_start_up_with_the_override_warns_and_goes_on(
    client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    client.config_set("maxmemory-policy", "allkeys-lru")
    registry = RedisRegistry(client)

    with caplog.at_level(logging.WARNING):
        check_persistence_at_startup(registry, allow_unsafe=True)

    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "redis.allow_unsafe_persistence" in warning.getMessage()
    assert "maxmemory-policy" in str(warning.__dict__["problems"])


def test_start_up_with_redis_down_goes_on_and_says_so(
    unused_loopback_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    client = unreachable(unused_loopback_port)
    registry = RedisRegistry(client, require_persistence=True)

    with caplog.at_level(logging.WARNING):
        check_persistence_at_startup(registry, allow_unsafe=False)

    assert any("NOT_SERVING" in r.getMessage() for r in caplog.records)
    client.close()
