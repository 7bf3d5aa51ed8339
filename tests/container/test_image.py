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

import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from delegation_service.adapters.upstream_dev import DevUpstreamIssuer
from delegation_service.client import DelegationClient
from devtools.redis_server import RedisServer, free_loopback_port, start_redis_server
from tests.container.engine import (
    ENGINE,
    IMAGE,
    OCI_LABELS,
    SCOPES,
    STOP_TIMEOUT_SECONDS,
    engine,
    grpc_health,
    image_healthcheck,
    inspect_image,
    on_host_network,
    run,
    write_etc,
)


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
