"""`delegation-service health --config`: the probe the image's HEALTHCHECK runs, against a real `serve`.

The image's HEALTHCHECK must follow the configuration it serves: the gRPC port with TLS (the README's
production setup), mTLS, or ports other than 50051. The probe reads the same config file and
environment as the server, asks the admin port's /readyz when there is one, and otherwise gRPC health
on ``server.listen``. `make image-test` runs the same probe inside the built image.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from delegation_service import cli
from devtools.redis_server import RedisServer
from tests.e2e.serving import CLI, Served, free_port, serve
from tests.security.pki import make_pki

READY_TIMEOUT_SECONDS = 30


def probe(config: Path, environ: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the HEALTHCHECK's command with the server's own environment overrides."""
    return subprocess.run(
        [*CLI, "health", "--config", str(config), "--timeout", "2", *args],
        env={**os.environ, **environ},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def wait_healthy(served: Served, config: Path, environ: Mapping[str, str], *args: str) -> str:
    """Probe until the server answers SERVING (bounded); its stdout."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while True:
        result = probe(config, environ, *args)
        if result.returncode == cli.EXIT_OK:
            return result.stdout
        assert served.process.poll() is None, served.log()[-3000:]
        assert time.monotonic() < deadline, f"never healthy: {result.stderr}"
        time.sleep(0.3)


def tls_environ(tmp_path: Path, **extra: str) -> dict[str, str]:
    pki = make_pki(tmp_path)
    return {
        "DELEGATION_TLS_CERT_FILE": str(pki.server.cert_file),
        "DELEGATION_TLS_KEY_FILE": str(pki.server.key_file),
        **extra,
    }


def test_plaintext_on_other_ports_is_healthy_then_unhealthy_once_stopped(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    environ = {"DELEGATION_ADMIN_LISTEN": f"127.0.0.1:{free_port()}"}
    with serve(tmp_path, redis_server.url, environ=environ) as served:
        config = tmp_path / "config.toml"
        assert not served.address.endswith(":50051")
        assert wait_healthy(served, config, environ).strip() == "SERVING"
        assert probe(config, environ).returncode == cli.EXIT_OK
        assert served.stop() == 0
        assert "Traceback" not in served.log()  # a probe that hangs up early resets the connection
    result = probe(config, environ)
    assert result.returncode == cli.EXIT_UNAVAILABLE
    assert result.stderr.startswith("unhealthy: http://127.0.0.1:")


def test_tls_grpc_port_is_probed_through_the_admin_port(tmp_path: Path, redis_server: RedisServer) -> None:
    environ = tls_environ(tmp_path, DELEGATION_ADMIN_LISTEN=f"127.0.0.1:{free_port()}")
    with serve(tmp_path, redis_server.url, environ=environ) as served:
        config = tmp_path / "config.toml"
        assert wait_healthy(served, config, environ).strip() == "SERVING"
        # What the image shipped before: a plaintext gRPC probe, which a TLS port never answers.
        plaintext = subprocess.run(
            [*CLI, "health", "--address", served.address, "--timeout", "2"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert plaintext.returncode == cli.EXIT_UNAVAILABLE


def test_tls_without_admin_port_needs_the_ca_and_then_checks_grpc_health(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    environ = tls_environ(tmp_path, DELEGATION_ADMIN_LISTEN="")
    with serve(tmp_path, redis_server.url, environ=environ) as served:
        config = tmp_path / "config.toml"
        refused = probe(config, environ)
        assert refused.returncode == cli.EXIT_USAGE
        assert "--tls-ca" in refused.stderr
        assert "Traceback" not in refused.stderr
        answer = wait_healthy(served, config, environ, "--tls-ca", str(tmp_path / "ca.crt"))
        assert answer.strip() == "SERVING"


@pytest.mark.parametrize(
    ("listen", "probed"),
    [
        ("0.0.0.0:50051", "127.0.0.1:50051"),
        (":8080", "127.0.0.1:8080"),
        ("[::]:8080", "[::1]:8080"),
        ("10.1.2.3:9000", "10.1.2.3:9000"),
        ("127.0.0.1:6000", "127.0.0.1:6000"),
    ],
)
def test_a_wildcard_listen_address_is_probed_on_loopback(listen: str, probed: str) -> None:
    assert cli._local_address(listen) == probed
