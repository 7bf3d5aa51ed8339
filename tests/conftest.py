"""Shared fixtures: a real ``redis-server`` of the suite's own, on a free loopback port.

The server never touches port 6379 (another Redis may live there) nor the disk (no RDB, no AOF), and it
is stopped when the session ends. CI installs ``redis-server``; without it the Redis tests fail loudly
rather than skip, so a missing dependency cannot pass for a green run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis

from devtools import redis_server as redis_processes
from devtools.redis_server import (
    LOOPBACK,
    START_TIMEOUT_SECONDS,
    RedisServer,
    RedisServerError,
    free_loopback_port,
)

if TYPE_CHECKING:
    from tests.redis_processes import RedisClusterProcesses


def start_redis_server(directory: Path, extra_args: Callable[[], Sequence[str]] = lambda: ()) -> RedisServer:
    """Start a private ``redis-server``; a missing or failing one fails the test loudly (never a skip)."""
    try:
        return redis_processes.start_redis_server(directory, extra_args)
    except RedisServerError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The session's own ``redis-server`` (``.url``, ``.port``, ``.client()``)."""
    server = start_redis_server(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client on an empty server: every test starts from FLUSHALL."""
    client = redis.Redis(host=LOOPBACK, port=redis_server.port, db=0)
    client.flushall()
    yield client
    client.close()


@pytest.fixture(scope="session")
def redis_cluster_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A one-node Redis Cluster owning every slot.

    One node is enough to prove the key layout: a cluster node refuses a multi-key command or script
    whose keys hash to different slots (CROSSSLOT) even when it owns them all.
    """
    server = start_redis_server(
        tmp_path_factory.mktemp("redis-cluster"),
        # The bus port defaults to port + 10000, which can overflow or be taken: pick a free one.
        lambda: ("--cluster-enabled", "yes", "--cluster-port", str(free_loopback_port())),
    )
    admin = server.client()
    admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)  # type: ignore[no-untyped-call]
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while b"cluster_state:ok" not in admin.execute_command("CLUSTER", "INFO"):  # type: ignore[no-untyped-call]
        if time.monotonic() > deadline:
            server.stop()
            pytest.fail("the one-node cluster never reached cluster_state:ok", pytrace=False)
        time.sleep(0.05)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    """A real 3-master Redis Cluster on loopback (``.url``, ``.client()``, ``.node_clients()``).

    Keys of different slots live on different processes here, so anything that only works because one
    node owns every slot fails.
    """
    # Imported here: that module builds on the helpers above.
    from tests.redis_processes import start_redis_cluster  # noqa: PLC0415

    cluster = start_redis_cluster(tmp_path_factory.mktemp("redis-cluster-3"))
    yield cluster
    cluster.stop()


@pytest.fixture
def unused_loopback_port() -> int:
    """A loopback port nothing listens on (for testing an unreachable server)."""
    return free_loopback_port()
