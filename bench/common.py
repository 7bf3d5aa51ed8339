"""What every bench process shares: names, keys on disk, free ports, CPU clocks and a private Redis."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from cryptography.hazmat.primitives import serialization

from delegation_service.adapters.keys import SigningKey

LOOPBACK = "127.0.0.1"
UPSTREAM_ISSUER = "https://idp.bench.invalid"
SERVICE_ISSUER = "https://delegation.bench.invalid"
SERVICE_KEY_PREFIX = "bench"
"""The service's Redis key prefix in the bench (the minimal Introspect reads the same keys)."""
FLOOR_KEY_PREFIX = "benchfloor"
"""Where the minimal Delegate writes, apart from the service's keys."""

DELEGATION_SCOPE = "directory.delegations.rw"
PARENT_CLIENT = "gateway"
PARENT_SCOPES = (DELEGATION_SCOPE, "directory.person.rw", "warehouse.items.rw")
CHILD_CLIENT = "billing"
CHILD_SCOPES = ("warehouse.items.r",)
PARENT_LIFETIME_SECONDS = 3600
CHILD_LIFETIME_SECONDS = 900
SUBJECTS = 64
"""Parents are spread over this many subjects (so over as many subject horizons)."""

ECHO_METHOD = "/bench.Echo/Echo"

REDIS_START_ATTEMPTS = 3
REDIS_START_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 5.0


def subject_for(index: int) -> str:
    """The subject of the ``index``-th parent."""
    return f"bench-user-{index % SUBJECTS}"


def free_loopback_port() -> int:
    """A port the kernel just handed out on loopback (free unless someone grabs it first)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


def write_private_key(key: SigningKey, path: Path) -> None:
    """Write ``key`` as PKCS#8 PEM, readable by its owner only (an ephemeral bench key)."""
    pem = key.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.touch(mode=0o600, exist_ok=True)
    path.write_bytes(pem)


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (every thread of it), from ``/proc/<pid>/stat``."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces and parentheses: fields after it start past the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _CLOCK_TICKS


def loadavg() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages."""
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return float(one), float(five), float(fifteen)


@dataclass
class RedisProcess:
    """A ``redis-server`` of the bench's own, on loopback, without persistence."""

    port: int
    process: subprocess.Popen[bytes]
    directory: Path

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://{LOOPBACK}:{self.port}/0"

    def client(self) -> redis.Redis:
        """A new client (the caller closes it)."""
        return redis.Redis(host=LOOPBACK, port=self.port, db=0, socket_timeout=120)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        stop_process(self.process)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Stop one child process we started: SIGTERM, then SIGKILL after a bounded wait."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_SECONDS)


def start_redis(directory: Path) -> RedisProcess:
    """Start ``redis-server`` on a free loopback port, no RDB and no AOF, and wait until it answers."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise RuntimeError("redis-server is not on PATH (install the redis-server package)")
    failures = []
    for attempt in range(REDIS_START_ATTEMPTS):
        port = free_loopback_port()
        workdir = directory / f"redis-{attempt}"
        workdir.mkdir(parents=True, exist_ok=True)
        settings = {
            "port": str(port),
            "bind": LOOPBACK,
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
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        server = RedisProcess(port, process, workdir)
        if _answers_ping(server):
            return server
        failures.append(f"attempt {attempt} on port {port}")
        server.stop()
    raise RuntimeError("redis-server did not start: " + "; ".join(failures))


def _answers_ping(server: RedisProcess) -> bool:
    deadline = time.monotonic() + REDIS_START_TIMEOUT_SECONDS
    probe = redis.Redis(host=LOOPBACK, port=server.port, socket_timeout=1, socket_connect_timeout=1)
    try:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                return False
            try:
                if probe.ping():
                    return True
            except redis.ConnectionError:
                time.sleep(0.05)
        return False
    finally:
        probe.close()
