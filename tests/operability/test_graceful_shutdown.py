"""SIGTERM under load: `delegation-service serve` drains and exits 0 within the grace period.

The production command runs as a subprocess over the session's real redis-server. To have RPCs that are
provably in flight when the signal lands, Redis is paused for a moment (``CLIENT PAUSE``, no debug
command needed): Delegate calls sent then wait inside the server for their store round trip. Every one
of them must complete OK; a call begun after the signal must get UNAVAILABLE; a revocation follower's
stream ends at once (UNAVAILABLE, SERVER_DRAINING); the process must exit 0 well before the grace
period is over. Background load runs throughout; every one of its calls ends OK or UNAVAILABLE, nothing
else. Every loop is bounded in count and time.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization

from delegation.v1 import delegation_pb2
from delegation_service.adapters.keys import generate_signing_key
from delegation_service.adapters.upstream_dev import DevUpstreamIssuer
from delegation_service.client import DelegationClient
from delegation_service.dev import demo_catalog_path
from tests.integration.harness import DELEGATION_SCOPE
from tests.operability.conftest import http

GRACE_SECONDS = 8.0
PAUSE_MS = 1500
IN_FLIGHT = 8
LOAD_THREADS = 4
LOAD_CALLS_PER_THREAD = 400
START_TIMEOUT_SECONDS = 30
UPSTREAM = "https://idp.shutdown.test.invalid"

pytestmark = pytest.mark.redis


@dataclass
class Served:
    process: subprocess.Popen[str]
    address: str
    admin_url: str
    upstream: DevUpstreamIssuer
    log: list[str]


def write_config(directory: Path, redis_url: str, upstream: DevUpstreamIssuer) -> Path:
    key = generate_signing_key("ES256")
    (directory / "signing.pem").write_bytes(
        key.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (directory / "upstream-jwks.json").write_text(json.dumps(upstream.jwks()))
    config = directory / "config.toml"
    config.write_text(
        f"""
[server]
listen = "127.0.0.1:0"
max_workers = 16
grace_seconds = {GRACE_SECONDS}
drain_seconds = 0                 # refuse new calls at once: the late call below must be refused

[admin]
listen = "127.0.0.1:0"

[issuer]
name = "https://delegation.shutdown.test.invalid"
signing_key_files = ["signing.pem"]

[catalog]
file = {json.dumps(str(demo_catalog_path()))}

[[trusted_issuers]]
issuer = "{UPSTREAM}"
jwks_file = "upstream-jwks.json"

[redis]
url = "{redis_url}"
key_prefix = "shutdown-test"
timeout_ms = 5000
allow_unsafe_persistence = true   # the test's redis-server keeps nothing on disk

[access]
mode = "open"                     # loopback only: anyone may follow revocations
"""
    )
    return config


@pytest.fixture
def served(tmp_path: Path, redis_server: object) -> Iterator[Served]:
    upstream = DevUpstreamIssuer(UPSTREAM)
    config = write_config(tmp_path, redis_server.url, upstream)  # type: ignore[attr-defined]
    process = subprocess.Popen(
        [sys.executable, "-m", "delegation_service.cli", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    log: list[str] = []
    ports: dict[str, int] = {}
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline and len(ports) < 2:
        line = process.stdout.readline()
        if not line:
            break
        log.append(line)
        entry = json.loads(line) if line.startswith("{") else {}
        if entry.get("event") in ("serving", "admin_serving"):
            ports[entry["event"]] = int(entry["port"])
    if len(ports) < 2:
        process.kill()
        pytest.fail("serve did not start:\n" + "".join(log) + (process.stdout.read() or ""))
    reader = threading.Thread(target=lambda: log.extend(process.stdout or ()), daemon=True)
    reader.start()
    running = Served(
        process, f"127.0.0.1:{ports['serving']}", f"http://127.0.0.1:{ports['admin_serving']}", upstream, log
    )
    yield running
    if process.poll() is None:
        process.kill()
        process.wait(timeout=10)
    reader.join(timeout=5)
    process.stdout.close()


def parent(served: Served) -> str:
    return served.upstream.mint(
        subject="alice", scopes=(DELEGATION_SCOPE, "warehouse.items.rw"), client_id="gateway"
    )


def delegate_code(client: DelegationClient, token: str) -> grpc.StatusCode:
    try:
        response = client.delegate(token, "billing", ["warehouse.items.r"])
    except grpc.RpcError as error:
        return error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    assert response.access_token
    return grpc.StatusCode.OK


def follow_revocations(served: Served, opened: threading.Event) -> str:
    """Follow the revocation stream until it ends; how it ended."""
    with DelegationClient(served.address) as client:
        stream = client.public.WatchRevocations(
            delegation_pb2.WatchRevocationsRequest(), timeout=GRACE_SECONDS * 2
        )
        opened.set()
        try:
            for _ in stream:
                pass
        except grpc.RpcError as error:
            return error.code().name if isinstance(error, grpc.Call) else "UNKNOWN"
        return "OK"


def delegate_started(served: Served) -> float:
    """Delegate RPCs the server has started, from its /metrics (the admin port needs no Redis)."""
    body = http(served.admin_url + "/metrics").body.decode()
    for line in body.splitlines():
        if line.startswith("grpc_server_started_total{") and 'grpc_method="Delegate"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_sigterm_under_load_finishes_in_flight_rpcs_refuses_new_ones_and_exits_0(
    served: Served, redis_client: object
) -> None:
    token = parent(served)
    stop_load = threading.Event()
    load_codes: list[grpc.StatusCode] = []

    def load() -> None:
        with DelegationClient(served.address, timeout=10) as client:
            for _ in range(LOAD_CALLS_PER_THREAD):
                if stop_load.is_set():
                    return
                code = delegate_code(client, token)
                load_codes.append(code)
                if code is not grpc.StatusCode.OK:
                    return

    with ThreadPoolExecutor(LOAD_THREADS + IN_FLIGHT + 1) as pool:
        loaders = [pool.submit(load) for _ in range(LOAD_THREADS)]
        watching = threading.Event()
        follower = pool.submit(follow_revocations, served, watching)
        assert watching.wait(5)
        time.sleep(0.5)  # let the load run
        assert load_codes and set(load_codes) == {grpc.StatusCode.OK}

        # Hold the store: the calls sent now are in flight inside the server when the signal lands.
        started_before = delegate_started(served)
        redis_client.execute_command("CLIENT", "PAUSE", PAUSE_MS, "ALL")  # type: ignore[attr-defined]
        clients = [DelegationClient(served.address, timeout=GRACE_SECONDS) for _ in range(IN_FLIGHT)]
        in_flight = [pool.submit(delegate_code, c, token) for c in clients]
        deadline = time.monotonic() + PAUSE_MS / 1000 / 2
        while delegate_started(served) < started_before + IN_FLIGHT and time.monotonic() < deadline:
            time.sleep(0.02)
        assert delegate_started(served) >= started_before + IN_FLIGHT, "the calls never reached the server"
        assert not any(f.done() for f in in_flight)

        signalled = time.monotonic()
        served.process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        # Draining: readiness is down while the in-flight calls are still held by the store.
        assert http(served.admin_url + "/readyz").status == 503
        with DelegationClient(served.address, timeout=2) as late:
            assert delegate_code(late, token) is grpc.StatusCode.UNAVAILABLE

        codes = [f.result(timeout=GRACE_SECONDS) for f in in_flight]
        # A revocation follower never ends by itself: draining ends its stream at once, resumably.
        follower_end = follower.result(timeout=GRACE_SECONDS)
        stop_load.set()
        for loader in loaders:
            loader.result(timeout=GRACE_SECONDS)
        for client in clients:
            client.close()

    exit_code = served.process.wait(timeout=GRACE_SECONDS + 5)
    elapsed = time.monotonic() - signalled
    assert codes == [grpc.StatusCode.OK] * IN_FLIGHT, codes
    assert exit_code == 0, "".join(served.log[-20:])
    assert follower_end == "UNAVAILABLE"  # resumable (SERVER_DRAINING): the follower resumes elsewhere
    # Nothing held the drain: the in-flight calls waited PAUSE_MS for the store, then it was over.
    assert elapsed < GRACE_SECONDS / 2, f"took {elapsed:.1f}s to exit"
    assert set(load_codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, set(load_codes)
    assert any('"event":"shutdown"' in line for line in served.log)
