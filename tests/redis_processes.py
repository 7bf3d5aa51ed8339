"""Redis processes the tests own: a real 3-master Redis Cluster, and private servers to break.

Everything listens on loopback ports the kernel hands out (never 6379), every wait is bounded, and every
process is stopped by whoever started it.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry

from devtools.redis_server import (
    LOOPBACK,
    START_ATTEMPTS,
    START_TIMEOUT_SECONDS,
    STOP_TIMEOUT_SECONDS,
    RedisServer,
    free_loopback_port,
)
from tests.conftest import start_redis_server

CLUSTER_CREATE_TIMEOUT_SECONDS = 30.0
TERM_WAIT_SECONDS = 1.0

DURABLE = {"appendonly": "yes", "appendfsync": "always", "maxmemory-policy": "noeviction"}
"""Settings that make every acknowledged write survive a kill -9 of redis-server."""


def _executable(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH: install the redis-server package (as CI does)", pytrace=False)
    return path


# -- a 3-master cluster -----------------------------------------------------------------------------


@dataclass
class RedisClusterProcesses:
    """Three ``redis-server --cluster-enabled yes`` masters, joined by ``redis-cli --cluster create``."""

    nodes: list[RedisServer]

    @property
    def url(self) -> str:
        """A start-up node for ``RedisCluster.from_url`` (it discovers the others)."""
        return f"redis://{LOOPBACK}:{self.nodes[0].port}"

    def client(self, **options: object) -> RedisCluster:
        """A new cluster client; the caller closes it."""
        return RedisCluster(
            # redis-py leaves ClusterNode.__init__ unannotated.
            startup_nodes=[ClusterNode(LOOPBACK, node.port) for node in self.nodes],  # type: ignore[no-untyped-call]
            **options,  # type: ignore[arg-type]
        )

    def node_clients(self) -> list[redis.Redis]:
        """A plain client on every master (for INFO, SCAN, FLUSHALL per node)."""
        return [node.client() for node in self.nodes]

    def flushall(self) -> None:
        """Empty every master."""
        for client in self.node_clients():
            client.flushall()

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()


def start_redis_cluster(directory: Path, masters: int = 3) -> RedisClusterProcesses:
    """Start ``masters`` cluster-enabled servers and join them into one cluster owning every slot.

    Waits (bounded) until every node reports ``cluster_state:ok`` and knows every master, so the first
    test never meets a half-formed cluster.
    """
    nodes: list[RedisServer] = []
    try:
        for index in range(masters):
            nodes.append(
                start_redis_server(
                    directory / f"node-{index}",
                    # The bus port defaults to port + 10000, which can overflow or be taken.
                    lambda: ("--cluster-enabled", "yes", "--cluster-port", str(free_loopback_port())),
                )
            )
        created = subprocess.run(
            [
                _executable("redis-cli"),
                "--cluster",
                "create",
                *(f"{LOOPBACK}:{node.port}" for node in nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=CLUSTER_CREATE_TIMEOUT_SECONDS,
            check=False,
        )
        if created.returncode != 0:
            pytest.fail(
                f"redis-cli --cluster create failed:\n{created.stdout}{created.stderr}", pytrace=False
            )
        _wait_until_formed(nodes)
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return RedisClusterProcesses(nodes)


def _wait_until_formed(nodes: Sequence[RedisServer]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    clients = [node.client(socket_timeout=1) for node in nodes]
    while True:
        infos = [client.execute_command("CLUSTER", "INFO") for client in clients]  # type: ignore[no-untyped-call]
        known = [client.execute_command("CLUSTER", "NODES") for client in clients]  # type: ignore[no-untyped-call]
        formed = all(b"cluster_state:ok" in info for info in infos) and all(
            _text(view).count("master") >= len(nodes) for view in known
        )
        if formed:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"the cluster never formed: {[_text(i)[:60] for i in infos]}", pytrace=False)
        time.sleep(0.05)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# -- a private server to break ----------------------------------------------------------------------


@dataclass
class PrivateRedis:
    """A ``redis-server`` of one test, on a fixed port and directory, that it may kill and restart.

    ``settings`` are passed as ``--name value`` (``extra_args`` as given); the data directory survives
    restarts, so a server started with AOF on comes back with what it acknowledged.
    """

    directory: Path
    settings: dict[str, str]
    extra_args: tuple[str, ...] = ()
    port: int = field(default_factory=free_loopback_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://{LOOPBACK}:{self.port}/0"

    def start(self) -> PrivateRedis:
        """Start (or restart) on the same port and directory; wait until it answers PING.

        A restart on the same port can race another process for it; attempts are bounded.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(START_ATTEMPTS):
            command = [_executable("redis-server")]
            for name, value in {
                "port": str(self.port),
                "bind": LOOPBACK,
                "save": "",
                "dir": str(self.directory),
                "logfile": str(self.directory / "redis.log"),
                "daemonize": "no",
                **self.settings,
            }.items():
                command += [f"--{name}", value]
            self.process = subprocess.Popen(
                [*command, *self.extra_args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._answers_ping():
                return self
            self.stop()
            time.sleep(0.2)
        pytest.fail(f"redis-server did not start on port {self.port}:\n{self.log_tail()}", pytrace=False)

    def kill(self) -> None:
        """``kill -9``: no shutdown, no final fsync."""
        process = self._running()
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_SECONDS)

    def freeze(self) -> None:
        """SIGSTOP: the port still accepts connections, nothing answers."""
        self._running().send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after :meth:`freeze`."""
        self._running().send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop it if it runs (thawing it first, so SIGTERM can act); idempotent.

        Redis refuses SIGTERM while it writes its first AOF (after ``CONFIG SET appendonly yes``): such
        a server is killed after a short wait instead.
        """
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)
        process.terminate()
        try:
            process.wait(timeout=TERM_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_SECONDS)

    def client(self) -> redis.Redis:
        """A fresh client with short timeouts and no retries (a down server fails at once)."""
        return redis.Redis(
            host=LOOPBACK,
            port=self.port,
            socket_timeout=2,
            socket_connect_timeout=2,
            retry=Retry(NoBackoff(), 0),
        )

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server's log, for failure messages."""
        log = self.directory / "redis.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""

    def _running(self) -> subprocess.Popen[bytes]:
        assert self.process is not None and self.process.poll() is None, "redis-server is not running"
        return self.process

    def _answers_ping(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        probe = redis.Redis(host=LOOPBACK, port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            while time.monotonic() < deadline:
                if self.process is None or self.process.poll() is not None:
                    return False
                try:
                    if probe.ping():
                        return True
                except redis.BusyLoadingError:
                    time.sleep(0.05)  # replaying its AOF
                except redis.ConnectionError:
                    time.sleep(0.05)
            return False
        finally:
            probe.close()
