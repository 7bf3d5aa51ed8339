"""Private ``redis-server`` processes for the tests and the benchmark.

Each listens on a loopback port the kernel hands out (never 6379, where a shared Redis may run), keeps
nothing on disk unless asked, and is stopped by whoever started it. Every wait is bounded.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

LOOPBACK = "127.0.0.1"
# Bounds on waiting for a server: attempts (a free port can be taken between probe and bind) and the
# time each attempt may take to answer PING.
START_ATTEMPTS = 3
START_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 5.0


class RedisServerError(RuntimeError):
    """Raised when redis-server is missing or does not start."""


def free_loopback_port() -> int:
    """A port the kernel just handed out on loopback; free unless someone grabs it first."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Stop a child process we started: SIGTERM, then SIGKILL after a bounded wait."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_SECONDS)


@dataclass
class RedisServer:
    """A running ``redis-server`` subprocess."""

    port: int
    process: subprocess.Popen[bytes]
    directory: Path
    _clients: list[redis.Redis] = field(default_factory=list)

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://{LOOPBACK}:{self.port}/0"

    def client(self, **options: object) -> redis.Redis:
        """A new client for this server; closed by :meth:`stop`."""
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
        """Close the clients, then stop the server."""
        for client in self._clients:
            client.close()
        self._clients.clear()
        stop_process(self.process)


def start_redis_server(directory: Path, extra_args: Callable[[], Sequence[str]] = lambda: ()) -> RedisServer:
    """Start ``redis-server`` on a free loopback port, with no RDB and no AOF, and wait for PING.

    ``extra_args`` is called once per attempt, so arguments naming ports get fresh ones too.
    """
    executable = shutil.which("redis-server")
    if executable is None:
        raise RedisServerError("redis-server is not on PATH: install the redis-server package (as CI does)")
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
    raise RedisServerError("redis-server did not start:\n" + "\n".join(failures))


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
