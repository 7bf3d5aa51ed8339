"""Helpers of the image tests: the container engine (docker or podman), the image, a started container
and the config directory it mounts. Used by test_image.py and test_compose.py (`make image-test`)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from grpc_health.v1 import health_pb2, health_pb2_grpc

from delegation_service.adapters.keys import generate_signing_key
from delegation_service.adapters.upstream_dev import DevUpstreamIssuer
from delegation_service.dev import demo_catalog_path
from tests.security.pki import make_pki

ENGINE = os.environ.get("CONTAINER_ENGINE", "podman")
IMAGE = os.environ.get("IMAGE", "delegation-service:local")
ETC = "/etc/delegation-service"
START_TIMEOUT_SECONDS = 60
STOP_TIMEOUT_SECONDS = 20
SCOPES = ("directory.delegations.rw", "warehouse.items.r")
OCI_LABELS = ("title", "description", "version", "revision", "created", "licenses")


def engine(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the container engine; its output as text (the engine's own noise stays in stderr)."""
    result = subprocess.run(
        [ENGINE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if check and result.returncode != 0:
        pytest.fail(f"{ENGINE} {' '.join(args)}: exit {result.returncode}: {result.stderr[-2000:]}")
    return result


def inspect_image() -> dict[str, object]:
    found: list[dict[str, object]] = json.loads(engine("image", "inspect", IMAGE).stdout)
    config = found[0]["Config"]
    assert isinstance(config, dict)
    return config


def image_healthcheck() -> list[str]:
    """The image's HEALTHCHECK test (["CMD", ...]); empty when it has none.

    Read through a template: docker keeps it under Config, podman's JSON beside it.
    """
    found = engine("image", "inspect", "--format", "{{json .Config.Healthcheck}}", IMAGE).stdout.strip()
    healthcheck = json.loads(found) if found else None
    return [str(part) for part in healthcheck["Test"]] if isinstance(healthcheck, dict) else []


@dataclass
class Container:
    """A started container: its id, and where the host reaches its ports."""

    id: str
    grpc_address: str
    admin_url: str

    def state(self) -> dict[str, object]:
        found: list[dict[str, object]] = json.loads(engine("inspect", self.id).stdout)
        state = found[0]["State"]
        assert isinstance(state, dict)
        return state

    def logs(self) -> str:
        result = engine("logs", self.id, check=False)
        return result.stdout + result.stderr

    def exec(self, *command: str) -> subprocess.CompletedProcess[str]:
        return engine("exec", self.id, *command, timeout=30, check=False)

    def healthcheck(self) -> subprocess.CompletedProcess[str]:
        """The image's own HEALTHCHECK command, run in the container as the engine would run it."""
        kind, *command = image_healthcheck()
        assert kind == "CMD", command
        return self.exec(*command)

    def http(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.admin_url + path, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def wait_live(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            with contextlib.suppress(OSError):
                if self.http("/livez")[0] == 200:
                    return
            assert self.state()["Running"], self.logs()[-3000:]
            assert time.monotonic() < deadline, f"/livez never answered:\n{self.logs()[-3000:]}"
            time.sleep(0.3)

    def wait_ready(self) -> None:
        self.wait_live()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while self.http("/readyz")[0] != 200:
            assert time.monotonic() < deadline, f"/readyz never 200:\n{self.logs()[-3000:]}"
            time.sleep(0.3)

    def wait_exit(self) -> int:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while (state := self.state())["Running"]:
            assert time.monotonic() < deadline, "the container never exited"
            time.sleep(0.3)
        code = state["ExitCode"]
        assert isinstance(code, int)
        return code


@contextlib.contextmanager
def run(
    etc: Path, environ: dict[str, str], grpc_port: int, admin_port: int, network: Sequence[str]
) -> Iterator[Container]:
    """Start the image's default command with ``etc`` mounted; removed on exit, by id."""
    args = ["run", "-d", *network, "-v", f"{etc}:{ETC}:ro"]
    for name, value in environ.items():
        args += ["-e", f"{name}={value}"]
    started = engine(*args, IMAGE)
    container = Container(
        started.stdout.strip().splitlines()[-1],
        f"127.0.0.1:{grpc_port}",
        f"http://127.0.0.1:{admin_port}",
    )
    try:
        yield container
    finally:
        engine("rm", "-f", "-t", "0", container.id, check=False)


def on_host_network(grpc_port: int, admin_port: int) -> dict[str, str]:
    """Ports off their defaults, on the host's loopback (the environment wins over the image's)."""
    return {
        "DELEGATION_SERVER_LISTEN": f"127.0.0.1:{grpc_port}",
        "DELEGATION_ADMIN_LISTEN": f"127.0.0.1:{admin_port}",
    }


def write_etc(folder: Path, redis_url: str, upstream: DevUpstreamIssuer, tls: bool = False) -> Path:
    """A config directory the image's user can read: key, catalog, upstream JWKS, config.toml."""
    etc = folder / "etc"
    etc.mkdir()
    key = generate_signing_key("ES256").private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (etc / "signing.pem").write_bytes(key)
    (etc / "catalog.toml").write_bytes(demo_catalog_path().read_bytes())
    (etc / "upstream-jwks.json").write_text(json.dumps(upstream.jwks()))
    tls_section = ""
    if tls:
        pki = make_pki(etc)
        tls_section = (
            f'[tls]\ncert_file = "{pki.server.cert_file.name}"\nkey_file = "{pki.server.key_file.name}"\n'
        )
    (etc / "config.toml").write_text(
        f"""
[server]
drain_seconds = 0
grace_seconds = 5
[issuer]
name = "https://delegation.image.invalid"
signing_key_files = ["signing.pem"]
[catalog]
file = "catalog.toml"
[[trusted_issuers]]
issuer = "{upstream.issuer}"
jwks_file = "upstream-jwks.json"
[redis]
url = "{redis_url}"
{tls_section}"""
    )
    for path in [etc, *etc.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return etc


def grpc_health(address: str, credentials: grpc.ChannelCredentials | None = None) -> str:
    """grpc.health.v1 Check from the host: the status name."""
    channel = grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
    with channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)  # the typeshed stub omits the RPC methods
        response = stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))
