"""`delegation-service serve` as a subprocess over a real redis-server, on free loopback ports.

Its log (stdout and stderr, JSON lines) goes to a file the tests read while it runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives import serialization
from grpc_health.v1 import health_pb2, health_pb2_grpc

from delegation.v1 import delegation_pb2
from delegation_service.adapters.keys import generate_signing_key
from delegation_service.adapters.upstream_dev import DevUpstreamIssuer
from delegation_service.client import DelegationClient
from delegation_service.dev import demo_catalog_path

CLI = (sys.executable, "-m", "delegation_service.cli")
STOP_TIMEOUT_SECONDS = 30
SCOPES = ("directory.delegations.rw", "warehouse.items.r")


def health_serving(address: str) -> bool:
    """Whether the gRPC health service at ``address`` answers SERVING (within a second)."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            # types-grpcio-health-checking declares HealthStub without its methods.
            response = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)  # type: ignore[attr-defined]
        except grpc.RpcError:
            return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_config(folder: Path, redis_url: str, upstream: DevUpstreamIssuer) -> Path:
    key = generate_signing_key("ES256").private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (folder / "signing.pem").write_bytes(key)
    (folder / "upstream-jwks.json").write_text(json.dumps(upstream.jwks()))
    port = free_port()
    config = folder / "config.toml"
    config.write_text(
        f"""
[server]
listen = "127.0.0.1:{port}"
[issuer]
name = "https://delegation.workers.invalid"
signing_key_files = ["signing.pem"]
[catalog]
file = "{demo_catalog_path().as_posix()}"
[[trusted_issuers]]
issuer = "{upstream.issuer}"
jwks_file = "upstream-jwks.json"
[redis]
url = "{redis_url}"
"""
    )
    return config


@dataclass
class Served:
    """A running ``serve``: its process, gRPC address, log file and an upstream parent to delegate from."""

    process: subprocess.Popen[bytes]
    address: str
    parent: str
    log_path: Path

    def children(self) -> list[str]:
        """The supervisor's child processes (workers, and multiprocessing's resource tracker)."""
        return subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], check=False, capture_output=True, text=True
        ).stdout.split()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self, event: str) -> list[dict[str, Any]]:
        """The JSON log lines with this ``event``."""
        found = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if entry.get("event") == event:
                    found.append(entry)
        return found

    def delegate_until_answered(self, deadline: float) -> None:
        with DelegationClient(self.address, timeout=2) as client:
            while True:
                try:
                    client.delegate(self.parent, "billing", ["warehouse.items.r"])
                    return
                except grpc.RpcError:
                    assert self.process.poll() is None, self.log()
                    assert time.monotonic() < deadline, "the server never answered"
                    time.sleep(0.2)

    def delegate_on_fresh_channels(self, count: int, wait_for_ready: bool = False) -> None:
        """Fresh channels are new connections, which SO_REUSEPORT spreads over the workers.

        With ``wait_for_ready`` a connection that fails is tried again (gRPC's own reconnection)
        within the call's deadline, instead of failing the call at once.
        """
        request = delegation_pb2.DelegateRequest(
            parent_token=self.parent, client_id="billing", scopes=["warehouse.items.r"]
        )
        for _ in range(count):
            with DelegationClient(self.address, timeout=5) as fresh:
                response = fresh.public.Delegate(request, timeout=5, wait_for_ready=wait_for_ready)
                assert response.access_token

    def stop(self) -> int:
        """SIGTERM, as an orchestrator would; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=STOP_TIMEOUT_SECONDS)


def spawn_serve(
    config: Path, workers: int, log_path: Path, environ: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``serve --config`` as a subprocess logging to ``log_path``, on a throw-away Redis (no durable
    persistence asked), with a metrics directory of its own."""
    env = {**os.environ, "DELEGATION_REDIS_ALLOW_UNSAFE_PERSISTENCE": "true", **(environ or {})}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [*CLI, "serve", "--config", str(config), "--workers", str(workers)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@contextlib.contextmanager
def serve(
    tmp_path: Path,
    redis_url: str,
    workers: int = 1,
    environ: Mapping[str, str] | None = None,
    prepare: Callable[[Path], None] = lambda folder: None,
) -> Iterator[Served]:
    """Start ``serve`` (the test Redis keeps nothing on disk); on exit, make sure it is gone.

    ``prepare`` may change the files beside the configuration before the process starts.
    """
    upstream = DevUpstreamIssuer("https://idp.workers.invalid")
    config = write_config(tmp_path, redis_url, upstream)
    prepare(tmp_path)
    log_path = tmp_path / "serve.log"
    process = spawn_serve(config, workers, log_path, environ)
    address = config.read_text().split('listen = "')[1].split('"')[0]
    parent = upstream.mint("alice", SCOPES, "gateway")
    served = Served(process, address, parent, log_path)
    try:
        yield served
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                for child in served.children():  # workers left behind by a stuck supervisor
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(child), signal.SIGKILL)
                process.kill()
                process.wait(timeout=STOP_TIMEOUT_SECONDS)
