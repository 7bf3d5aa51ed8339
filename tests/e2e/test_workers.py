"""`serve --workers 2`: two processes answer on one port, /metrics adds up both, SIGTERM stops them all."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography.hazmat.primitives import serialization
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

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


@dataclass
class Workers:
    """``serve --workers 2`` as a subprocess, with its address and an upstream parent to delegate from."""

    process: subprocess.Popen[str]
    address: str
    parent: str

    def children(self) -> list[str]:
        return subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], check=False, capture_output=True, text=True
        ).stdout.split()

    def delegate_until_answered(self, deadline: float) -> None:
        with DelegationClient(self.address, timeout=2) as client:
            while True:
                try:
                    client.delegate(self.parent, "billing", ["warehouse.items.r"])
                    return
                except grpc.RpcError:
                    assert time.monotonic() < deadline, "the workers never answered"
                    time.sleep(0.2)

    def delegate_on_fresh_channels(self, count: int) -> None:
        """Fresh channels are new connections, which SO_REUSEPORT spreads over the workers."""
        for _ in range(count):
            with DelegationClient(self.address, timeout=2) as fresh:
                assert fresh.delegate(self.parent, "billing", ["warehouse.items.r"]).access_token


@contextlib.contextmanager
def two_workers(tmp_path: Path, redis_url: str, admin_listen: str) -> Iterator[Workers]:
    """Start two workers (the test Redis keeps nothing on disk); on exit, SIGTERM and expect exit 0."""
    upstream = DevUpstreamIssuer("https://idp.workers.invalid")
    config = write_config(tmp_path, redis_url, upstream)
    env = {
        **os.environ,
        "DELEGATION_REDIS_ALLOW_UNSAFE_PERSISTENCE": "true",
        "DELEGATION_ADMIN_LISTEN": admin_listen,
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "delegation_service.cli", "serve", "--config", str(config), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    address = config.read_text().split('listen = "')[1].split('"')[0]
    parent = upstream.mint("alice", ("directory.delegations.rw", "warehouse.items.r"), "gateway")
    try:
        yield Workers(process, address, parent)
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
        assert process.stderr is not None
        errors = process.stderr.read()
        process.stderr.close()
    assert code == 0, errors


def test_two_workers_serve_one_port_and_stop_on_sigterm(tmp_path: Path, redis_server: object) -> None:
    with two_workers(tmp_path, redis_server.url, "") as workers:  # type: ignore[attr-defined]
        workers.delegate_until_answered(time.monotonic() + 30)
        workers.delegate_on_fresh_channels(10)  # every call succeeds, whichever worker answers
        assert len(workers.children()) >= 2


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _delegate_ok(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    labels = {
        "grpc_type": "UNARY",
        "grpc_service": "delegation.v1.DelegationService",
        "grpc_method": "Delegate",
        "grpc_code": "OK",
    }
    return samples.get(("grpc_server_handled_total", tuple(sorted(labels.items()))), 0.0)


def _environ(pid: str) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
    return dict(entry.split("=", 1) for entry in entries if "=" in entry)


def _merged(files: Iterable[Path]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of one worker's metric files, as the MultiProcessCollector reads them."""
    families = MultiProcessCollector.merge([str(f) for f in files])  # type: ignore[no-untyped-call]
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families
        for sample in family.samples
    }


def test_metrics_of_two_workers_add_up_on_the_admin_port(tmp_path: Path, redis_server: object) -> None:
    admin = f"127.0.0.1:{free_port()}"
    with two_workers(tmp_path, redis_server.url, admin) as workers:  # type: ignore[attr-defined]
        deadline = time.monotonic() + 30
        while True:
            try:
                before = _delegate_ok(_scrape(f"http://{admin}/metrics"))
                break
            except OSError:
                assert time.monotonic() < deadline, "the admin port never answered"
                time.sleep(0.2)
        workers.delegate_until_answered(deadline)
        workers.delegate_on_fresh_channels(29)
        calls = 30

        after = _scrape(f"http://{admin}/metrics")

        assert _delegate_ok(after) - before == calls
        issued = after[("delegation_tokens_issued_total", (("client_id", "billing"),))]
        assert issued == calls + before  # every earlier OK Delegate minted too
        assert not any(dict(labels).get("pid") for _, labels in after)  # summed, not one series per worker
        assert after[("delegation_verification_keys", ())] == 1
        names = {name for name, _ in after}
        assert {"delegation_signing_key_info", "delegation_build_info", "python_info"} <= names
        children = workers.children()
        # The supervisor's children: the two workers and multiprocessing's resource tracker.
        with_metrics = [pid for pid in children if "PROMETHEUS_MULTIPROC_DIR" in _environ(pid)]
        metrics_dir = Path(_environ(with_metrics[0])["PROMETHEUS_MULTIPROC_DIR"])
        pids = [pid for pid in with_metrics if list(metrics_dir.glob(f"*_{pid}.db"))]
        assert len(pids) == 2, (children, sorted(p.name for p in metrics_dir.iterdir()))
        # Each worker served some of the calls, and /metrics is their sum.
        per_worker = [_delegate_ok(_merged(metrics_dir.glob(f"*_{pid}.db"))) for pid in pids]
        assert all(count > 0 for count in per_worker), per_worker
        assert sum(per_worker) == _delegate_ok(after)
    assert not metrics_dir.exists()  # the supervisor removed its metrics directory
