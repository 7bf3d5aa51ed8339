"""The built image, run the way the README deploys it, against a real redis-server (`make image-test`).

One container per scenario, each with a config directory mounted read-only at /etc/delegation-service
(where the image's CMD looks) and the ports moved off their defaults by the environment:
- plaintext: the admin port, gRPC health and a Delegate from the host, the image's own HEALTHCHECK,
  non-root, PID 1, and SIGTERM exiting 0;
- TLS on the gRPC port: health over TLS from the host, the HEALTHCHECK still healthy;
- the image's default listen addresses behind `-p` on the engine's bridge network: published ports
  reach something;
- a Redis without appendonly: the service refuses to start (exit 2, naming the setting).
Redis runs on the host's loopback; the containers that use it share the host's network.
"""

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
from delegation_service.client import DelegationClient
from delegation_service.dev import demo_catalog_path
from devtools.redis_server import RedisServer, free_loopback_port, start_redis_server
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


@pytest.fixture(scope="module")
def safe_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server with the settings the service requires (appendonly yes, noeviction)."""
    server = start_redis_server(
        tmp_path_factory.mktemp("redis-safe"),
        lambda: ("--appendonly", "yes", "--maxmemory-policy", "noeviction"),
    )
    yield server
    server.stop()


def test_image_metadata_labels_user_and_no_installer() -> None:
    config = inspect_image()
    labels = config.get("Labels") or {}
    assert isinstance(labels, dict)
    for name in OCI_LABELS:
        assert labels.get(f"org.opencontainers.image.{name}"), f"missing OCI label {name}: {labels}"
    user = str(config.get("User", ""))
    assert user and not user.startswith(("0", "root")), user
    healthcheck = image_healthcheck()
    assert healthcheck, "no HEALTHCHECK (built without --format docker?)"
    assert "--config" in healthcheck
    environment = config.get("Env")
    assert isinstance(environment, list)
    assert "DELEGATION_SERVER_LISTEN=0.0.0.0:50051" in environment
    assert "DELEGATION_ADMIN_LISTEN=0.0.0.0:8080" in environment
    # The runtime venv carries no installer: pip and setuptools are not importable.
    probe = engine(
        "run", "--rm", "--network", "none", "--entrypoint", "python", IMAGE, "-I", "-c",
        "import importlib.util as u; print([m for m in ('pip', 'setuptools') if u.find_spec(m)])",
    )  # fmt: skip
    assert probe.stdout.strip() == "[]", probe.stdout


def test_plaintext_serves_reports_healthy_and_stops_cleanly_on_sigterm(
    tmp_path: Path, safe_redis: RedisServer
) -> None:
    upstream = DevUpstreamIssuer("https://idp.image.invalid")
    etc = write_etc(tmp_path, safe_redis.url, upstream)
    grpc_port, admin_port = free_loopback_port(), free_loopback_port()
    environ = on_host_network(grpc_port, admin_port)
    with run(etc, environ, grpc_port, admin_port, ["--network", "host"]) as container:
        container.wait_ready()
        status, body = container.http("/metrics")
        assert status == 200 and b"delegation_signing_key_info" in body
        status, body = container.http("/.well-known/jwks.json")
        assert status == 200 and json.loads(body)["keys"][0]["kid"]
        assert grpc_health(container.grpc_address) == "SERVING"
        parent = upstream.mint("alice", SCOPES, "gateway")
        with DelegationClient(container.grpc_address, timeout=5) as client:
            child = client.delegate(parent, "billing", ["warehouse.items.r"])
        assert child.access_token.count(".") == 2
        assert list(child.scopes) == ["warehouse.items.r"]
        healthcheck = container.healthcheck()
        assert healthcheck.returncode == 0, healthcheck.stderr
        assert healthcheck.stdout.strip() == "SERVING"
        if ENGINE == "podman":  # the engine's own runner of the HEALTHCHECK
            assert engine("healthcheck", "run", container.id, check=False).returncode == 0
        uid = container.exec("id", "-u").stdout.strip()
        assert uid and uid != "0", uid
        assert "delegation-service" in container.exec("cat", "/proc/1/cmdline").stdout

        started = time.monotonic()
        engine("stop", "-t", str(STOP_TIMEOUT_SECONDS), container.id, timeout=STOP_TIMEOUT_SECONDS + 30)
        assert container.wait_exit() == 0, container.logs()[-3000:]
        assert time.monotonic() - started < STOP_TIMEOUT_SECONDS, "SIGTERM was not enough: it was killed"
        logs = container.logs()
        assert '"event":"exit"' in logs, logs[-3000:]
        assert "Traceback" not in logs, logs[-3000:]


def test_tls_grpc_port_serves_and_the_healthcheck_stays_healthy(
    tmp_path: Path, safe_redis: RedisServer
) -> None:
    upstream = DevUpstreamIssuer("https://idp.image.invalid")
    etc = write_etc(tmp_path, safe_redis.url, upstream, tls=True)
    grpc_port, admin_port = free_loopback_port(), free_loopback_port()
    with run(
        etc, on_host_network(grpc_port, admin_port), grpc_port, admin_port, ["--network", "host"]
    ) as container:
        container.wait_ready()
        credentials = grpc.ssl_channel_credentials(root_certificates=(etc / "ca.crt").read_bytes())
        assert grpc_health(container.grpc_address, credentials) == "SERVING"
        with pytest.raises(grpc.RpcError):
            grpc_health(container.grpc_address)  # plaintext to a TLS port
        healthcheck = container.healthcheck()
        assert healthcheck.returncode == 0, healthcheck.stderr
        if ENGINE == "podman":
            assert engine("healthcheck", "run", container.id, check=False).returncode == 0
        engine("stop", "-t", str(STOP_TIMEOUT_SECONDS), container.id, timeout=STOP_TIMEOUT_SECONDS + 30)
        assert container.wait_exit() == 0, container.logs()[-3000:]


def test_default_listen_addresses_are_published_by_port_mapping(tmp_path: Path) -> None:
    # The image's own listen addresses, on the engine's bridge network: no Redis is reachable from
    # there, so the service runs NOT_SERVING, which is still an answer through the published ports.
    upstream = DevUpstreamIssuer("https://idp.image.invalid")
    etc = write_etc(tmp_path, "redis://127.0.0.1:1/0", upstream)
    grpc_port, admin_port = free_loopback_port(), free_loopback_port()
    published = ["-p", f"127.0.0.1:{grpc_port}:50051", "-p", f"127.0.0.1:{admin_port}:8080"]
    with run(etc, {}, grpc_port, admin_port, published) as container:
        container.wait_live()
        assert container.http("/readyz")[0] == 503
        assert grpc_health(container.grpc_address) == "NOT_SERVING"
        assert container.healthcheck().returncode != 0


def test_refuses_a_redis_without_appendonly(tmp_path: Path) -> None:
    unsafe = start_redis_server(tmp_path / "redis-unsafe")  # appendonly no
    try:
        etc = write_etc(tmp_path, unsafe.url, DevUpstreamIssuer("https://idp.image.invalid"))
        grpc_port, admin_port = free_loopback_port(), free_loopback_port()
        environ = on_host_network(grpc_port, admin_port)
        with run(etc, environ, grpc_port, admin_port, ["--network", "host"]) as container:
            assert container.wait_exit() == 2
            assert "appendonly is 'no'" in container.logs()
    finally:
        unsafe.stop()
