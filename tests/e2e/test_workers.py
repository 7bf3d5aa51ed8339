"""`serve --workers 2`: two processes answer on one port, and SIGTERM stops them all with exit 0."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
from cryptography.hazmat.primitives import serialization

from delegation_service.adapters.keys import generate_signing_key
from delegation_service.adapters.upstream_dev import DevUpstreamIssuer
from delegation_service.client import DelegationClient
from delegation_service.dev import demo_catalog_path


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


def test_two_workers_serve_one_port_and_stop_on_sigterm(tmp_path: Path, redis_server: object) -> None:
    upstream = DevUpstreamIssuer("https://idp.workers.invalid")
    config = write_config(tmp_path, redis_server.url, upstream)  # type: ignore[attr-defined]
    # The test Redis keeps nothing on disk; and no admin HTTP port is needed here.
    env = {**os.environ, "DELEGATION_REDIS_ALLOW_UNSAFE_PERSISTENCE": "true", "DELEGATION_ADMIN_LISTEN": ""}
    process = subprocess.Popen(
        [sys.executable, "-m", "delegation_service.cli", "serve", "--config", str(config), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        address = config.read_text().split('listen = "')[1].split('"')[0]
        parent = upstream.mint("alice", ("directory.delegations.rw", "warehouse.items.r"), "gateway")
        deadline = time.monotonic() + 30
        with DelegationClient(address, timeout=2) as client:
            while True:
                try:
                    client.delegate(parent, "billing", ["warehouse.items.r"])
                    break
                except grpc.RpcError:
                    assert time.monotonic() < deadline, "the workers never answered"
                    time.sleep(0.2)
            # Fresh channels spread over the workers; every call must succeed whichever answers.
            for _ in range(10):
                with DelegationClient(address, timeout=2) as fresh:
                    assert fresh.delegate(parent, "billing", ["warehouse.items.r"]).access_token
        children = subprocess.run(
            ["pgrep", "-P", str(process.pid)], check=False, capture_output=True, text=True
        ).stdout.split()
        assert len(children) >= 2
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
        assert process.stderr is not None
        errors = process.stderr.read()
        process.stderr.close()
    assert code == 0, errors
