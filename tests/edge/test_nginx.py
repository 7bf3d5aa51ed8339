"""End to end through a real nginx: ``auth_request`` (the README's snippet, as written) in front of a tiny
upstream, calling the edge's forward-auth, which follows the real service. A child works through nginx,
is revoked with the CLI, and the next request through nginx is refused."""

from __future__ import annotations

import http.client
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from delegation_service.edge.verifier import RouteRule
from devtools.redis_server import LOOPBACK, free_loopback_port
from tests.edge.conftest import EdgeFactory, wait_until
from tests.integration.harness import Harness
from tests.operability.readme import block

pytestmark = pytest.mark.redis

SNIPPET_EDGE = "127.0.0.1:9192"
SNIPPET_UPSTREAM = "127.0.0.1:8080"


def readme_snippet() -> str:
    """The nginx block the README shows (marked ``readme-test: edge-nginx``), exactly as written."""
    return block("edge-nginx")


class _Upstream(BaseHTTPRequestHandler):
    """Answers 200 with the identity nginx passed on."""

    def do_GET(self) -> None:
        body = f"hello {self.headers.get('X-Delegation-Subject', '?')}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def upstream() -> Iterator[int]:
    server = ThreadingHTTPServer((LOOPBACK, 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def _nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found is None:
        pytest.fail("nginx is not installed (CI installs it: .ci/run)", pytrace=False)
    return found


def start_nginx(directory: Path, edge_port: int, upstream_port: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_loopback_port()
    snippet = readme_snippet()
    assert SNIPPET_EDGE in snippet and SNIPPET_UPSTREAM in snippet
    snippet = snippet.replace(SNIPPET_EDGE, f"127.0.0.1:{edge_port}").replace(
        SNIPPET_UPSTREAM, f"127.0.0.1:{upstream_port}"
    )
    temp = {name: directory / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir()
    config = directory / "nginx.conf"
    config.write_text(
        f"""
daemon off;
master_process off;
worker_processes 1;
pid {directory / "nginx.pid"};
error_log stderr warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    server {{
        listen 127.0.0.1:{port};
{snippet}
    }}
}}
"""
    )
    process = subprocess.Popen(
        [_nginx_binary(), "-p", str(directory), "-e", "stderr", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return process, port


@pytest.fixture
def nginx_for(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


def get(port: int, path: str, token: str | None) -> tuple[int, str, str]:
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=5)
    try:
        connection.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        response = connection.getresponse()
        return response.status, response.read().decode(), response.getheader("WWW-Authenticate") or ""
    finally:
        connection.close()


def nginx_answers(port: int) -> bool:
    try:
        get(port, "/", None)
    except OSError:
        return False
    return True


def revoke_with_cli(service: Harness, chain_id: str) -> None:
    completed = subprocess.run(
        [
            *(sys.executable, "-m", "delegation_service.cli", "revoke", "chain", "--chain-id", chain_id),
            *("--yes", "--address", service.address, "--operator-token", service.operator_secret),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr


def test_a_child_revoked_with_the_cli_is_refused_by_nginx(
    service: Harness,
    start_edge_for: EdgeFactory,
    upstream: int,
    nginx_for: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    edge = start_edge_for(routes=(RouteRule("/items", "warehouse.items.r"),))
    nginx, port = start_nginx(tmp_path, edge.http_port, upstream)
    nginx_for.append(nginx)
    wait_until(lambda: nginx_answers(port) or nginx.poll() is not None, "nginx listening")
    assert nginx.poll() is None, nginx.stderr.read().decode() if nginx.stderr else ""

    with service.client() as client:
        child = client.delegate(service.parent(subject="carol"), "billing", ["warehouse.items.r"])
    status, body, _ = get(port, "/items/7", child.access_token)
    assert (status, body) == (200, "hello carol\n")

    status, _, challenge = get(port, "/items/7", None)
    assert status == 401
    assert challenge == 'Bearer realm="delegation-service"'
    assert get(port, "/other", child.access_token)[0] == 403

    revoke_with_cli(service, child.chain_id)
    wait_until(lambda: get(port, "/items/7", child.access_token)[0] == 401, "nginx refuses the revoked child")
    assert 'error="invalid_token"' in get(port, "/items/7", child.access_token)[2]
