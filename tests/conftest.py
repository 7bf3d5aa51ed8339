"""Shared fixtures: a real ``redis-server`` of the suite's own, on a free loopback port.

The server never touches port 6379 (another Redis may live there) nor the disk (no RDB, no AOF), and it
is stopped when the session ends. CI installs ``redis-server``; without it the Redis tests fail loudly
rather than skip, so a missing dependency cannot pass for a green run.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis

if TYPE_CHECKING:
    from tests.redis_processes import RedisClusterProcesses

LOOPBACK = "127.0.0.1"
# Bounds on waiting for a server: attempts (a free port can be taken between probe and bind) and the
# time each attempt may take to answer PING.
START_ATTEMPTS = 3
START_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 5.0


def free_loopback_port() -> int:
    """A port the kernel just handed out on loopback; free unless someone grabs it first."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class RedisServer:
    """A running ``redis-server`` subprocess owned by the test session."""

    port: int
    process: subprocess.Popen[bytes]
    directory: Path
    _clients: list[redis.Redis] = field(default_factory=list)

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://{LOOPBACK}:{self.port}/0"

    def client(self, **options: object) -> redis.Redis:
        """A new client for this server; closed when the session ends."""
        client = redis.Redis(host=LOOPBACK, port=self.port, db=0, **options)  # type: ignore[arg-type]
        self._clients.append(client)
        return client

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server's log, for failure messages."""
        log = self.directory / "redis.log"
        if not log.exists():
            return "(no log)"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Close the clients, then stop the server (SIGTERM, SIGKILL if it lingers)."""
        for client in self._clients:
            client.close()
        self._clients.clear()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)


def start_redis_server(directory: Path, extra_args: Callable[[], Sequence[str]] = lambda: ()) -> RedisServer:
    """Start ``redis-server`` on a free loopback port and wait until it answers PING.

    ``extra_args`` is called once per attempt, so arguments naming ports get fresh ones too.
    """
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.fail(
            "redis-server is not on PATH: the contract and integration tests need a real Redis 7 "
            "(install the redis-server package, as CI does)",
            pytrace=False,
        )
    failures: list[str] = []
    for attempt in range(START_ATTEMPTS):
        port = free_loopback_port()
        workdir = directory / f"attempt-{attempt}"
        workdir.mkdir(parents=True, exist_ok=True)
        settings = {
            "port": str(port),
            "bind": LOOPBACK,
            # No RDB snapshots, no AOF: a throwaway server that never writes data to disk.
            "save": "",
            "appendonly": "no",
            "dir": str(workdir),
            "logfile": str(workdir / "redis.log"),
            "daemonize": "no",
        }
        command = [executable]
        for name, value in settings.items():
            command += [f"--{name}", value]
        process = subprocess.Popen(
            [*command, *extra_args()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server = RedisServer(port, process, workdir)
        if _answers_ping(server):
            return server
        failures.append(f"attempt {attempt} on port {port}:\n{server.log_tail()}")
        server.stop()
    pytest.fail("redis-server did not start:\n" + "\n".join(failures), pytrace=False)


def _answers_ping(server: RedisServer) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    probe = redis.Redis(host=LOOPBACK, port=server.port, socket_timeout=1, socket_connect_timeout=1)
    try:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                return False  # it exited: most likely the port was taken meanwhile
            try:
                if probe.ping():
                    return True
            except redis.ConnectionError:
                time.sleep(0.05)
        return False
    finally:
        probe.close()


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
