"""compose.yaml, started as a user would (`podman-compose up`, or `docker compose up`): the service and its
Redis with the AOF on answer through the published loopback ports, and `down` stops the service cleanly.

Its Redis image comes from a registry; on a machine that reaches none, and lacks the image, a stand-in
is built under the same name from Debian's redis-server (redis-standin/Containerfile), so compose.yaml
runs unchanged. The project name, ports and config directory are the test's own.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from delegation_service.adapters.upstream_dev import DevUpstreamIssuer
from delegation_service.client import DelegationClient
from devtools.redis_server import free_loopback_port
from tests.container.engine import (
    ENGINE,
    IMAGE,
    SCOPES,
    START_TIMEOUT_SECONDS,
    Container,
    engine,
    grpc_health,
    write_etc,
)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose.yaml"
STANDIN = Path(__file__).resolve().parent / "redis-standin"


def compose_command() -> list[str]:
    """podman-compose (installed in the venv by `make image-test`) for podman, the plugin for docker."""
    if ENGINE == "docker":
        return ["docker", "compose"]
    beside = Path(sys.executable).parent / "podman-compose"
    found = str(beside) if beside.exists() else shutil.which("podman-compose")
    if found is None:
        pytest.fail("podman-compose is not installed (make image-test installs it)", pytrace=False)
    return [found]


def redis_image() -> str:
    match = re.search(r"^\s*image:\s*(\S*redis\S*)\s*$", COMPOSE_FILE.read_text(), re.MULTILINE)
    assert match is not None, "compose.yaml names no redis image"
    return match.group(1)


def ensure_redis_image() -> None:
    """The compose file's Redis image: present, pulled, or (no registry) the Debian stand-in."""
    image = redis_image()
    if engine("image", "inspect", image, check=False).returncode == 0:
        return
    if engine("pull", image, timeout=120, check=False).returncode == 0:
        return
    build = ["build", "--network", "host", "-t", image, str(STANDIN)]
    if ENGINE == "podman":
        build.insert(1, "--format=docker")
    engine(*build, timeout=600)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[tuple[list[str], dict[str, str], DevUpstreamIssuer]]:
    """The compose command for a project of the test's own, its environment, and the upstream issuer."""
    ensure_redis_image()
    upstream = DevUpstreamIssuer("https://idp.compose.invalid")
    etc = write_etc(tmp_path, "redis://redis:6379/0", upstream)
    command = [*compose_command(), "-f", str(COMPOSE_FILE), "-p", f"delegation-test-{secrets.token_hex(4)}"]
    environ = {
        **os.environ,
        "DELEGATION_ETC": str(etc),
        "DELEGATION_IMAGE": IMAGE,
        "DELEGATION_GRPC_PORT": str(free_loopback_port()),
        "DELEGATION_ADMIN_PORT": str(free_loopback_port()),
    }
    try:
        yield command, environ, upstream
    finally:
        subprocess.run(
            [*command, "down", "-v", "-t", "5"],
            env=environ,
            capture_output=True,
            timeout=120,
            check=False,
            stdin=subprocess.DEVNULL,
        )


def compose(command: list[str], environ: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*command, *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, f"compose {' '.join(args)}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    return result


def service_container(project_name: str, service: str) -> str:
    """The id of a compose service's container (both tools set the compose labels)."""
    found = engine(
        "ps", "-a", "-q",
        "--filter", f"label=com.docker.compose.project={project_name}",
        "--filter", f"label=com.docker.compose.service={service}",
    ).stdout.split()  # fmt: skip
    assert len(found) == 1, found
    return found[0]


def test_compose_starts_the_service_over_a_redis_with_aof(
    project: tuple[list[str], dict[str, str], DevUpstreamIssuer],
) -> None:
    command, environ, upstream = project
    project_name = command[command.index("-p") + 1]
    compose(command, environ, "up", "-d")
    service = Container(
        service_container(project_name, "delegation-service"),
        f"127.0.0.1:{environ['DELEGATION_GRPC_PORT']}",
        f"http://127.0.0.1:{environ['DELEGATION_ADMIN_PORT']}",
    )
    service.wait_ready()
    assert grpc_health(service.grpc_address) == "SERVING"
    with DelegationClient(service.grpc_address, timeout=5) as client:
        child = client.delegate(upstream.mint("alice", SCOPES, "gateway"), "billing", ["warehouse.items.r"])
    assert child.access_token.count(".") == 2
    redis = service_container(project_name, "redis")
    settings = engine("exec", redis, "redis-cli", "config", "get", "appendonly").stdout.split()
    assert settings == ["appendonly", "yes"], settings
    # The service's token records reached the compose Redis.
    assert int(engine("exec", redis, "redis-cli", "dbsize").stdout.strip()) > 0
    healthcheck = service.healthcheck()
    assert healthcheck.returncode == 0, healthcheck.stderr

    compose(command, environ, "stop", "-t", "20", "delegation-service")
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while service.state()["Running"]:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert service.state()["ExitCode"] == 0, service.logs()[-3000:]
