"""`delegation-service serve` on a Redis without an AOF: it refuses to start, saying why and how to
override; with the (development-only) override it serves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools.redis_server import free_loopback_port
from tests.e2e.serving import health_serving
from tests.redis_processes import DURABLE, PrivateRedis

pytestmark = pytest.mark.redis

CLI = [sys.executable, "-m", "delegation_service.cli"]
CATALOG = Path(__file__).resolve().parents[2] / "delegation_service" / "demo" / "catalog.toml"
WAIT_SECONDS = 20.0


def write_config(directory: Path, redis_url: str, port: int) -> Path:
    subprocess.run(
        [*CLI, "keys", "generate", "--out", str(directory / "signing.pem")],
        check=True,
        capture_output=True,
        timeout=30,
    )
    config = directory / "config.toml"
    config.write_text(
        f"""
[server]
listen = "127.0.0.1:{port}"
[admin]
listen = ""
[issuer]
name = "https://delegation.test.invalid"
signing_key_files = ["signing.pem"]
[catalog]
file = "{CATALOG}"
[redis]
url = "{redis_url}"
""",
        encoding="utf-8",
    )
    return config


def serving(port: int) -> bool:
    return health_serving(f"127.0.0.1:{port}")


def test_serve_refuses_a_redis_without_aof_unless_overridden(tmp_path: Path) -> None:
    volatile = PrivateRedis(tmp_path / "redis", {**DURABLE, "appendonly": "no"}).start()
    port = free_loopback_port()
    config = write_config(tmp_path, volatile.url, port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DELEGATION_")}
    try:
        refused = subprocess.run(
            [*CLI, "serve", "--config", str(config)],
            env=env,
            capture_output=True,
            text=True,
            timeout=WAIT_SECONDS,
            check=False,
        )
        assert refused.returncode == 2
        assert "cannot start: Redis is not configured for durable revocations" in refused.stderr
        assert "appendonly is 'no', revocations need 'yes'" in refused.stderr
        assert "redis.allow_unsafe_persistence = true for development only" in refused.stderr
        assert '"event":"redis_persistence","outcome":"unsafe"' in refused.stdout  # the log line

        overridden = subprocess.Popen(
            [*CLI, "serve", "--config", str(config)],
            env={**env, "DELEGATION_REDIS_ALLOW_UNSAFE_PERSISTENCE": "true"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            deadline = time.monotonic() + WAIT_SECONDS
            while not serving(port):
                assert overridden.poll() is None, "serve exited despite the override"
                assert time.monotonic() < deadline, "serve never reported SERVING"
                time.sleep(0.1)
        finally:
            overridden.send_signal(signal.SIGTERM)
            output, _ = overridden.communicate(timeout=WAIT_SECONDS)
        assert overridden.returncode == 0
        assert '"outcome":"overridden"' in output
    finally:
        volatile.stop()
