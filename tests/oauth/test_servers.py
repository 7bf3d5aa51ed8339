"""What is particular to each of the OAuth port's two servers (``oauth.server``): start and stop (a
request in flight finishes, idle connections close, no thread is left), the connection bound, idle
keep-alive connections, a taken port; granian's TLS, its start-up error without the extra, the
configuration it refuses, and that it leaves our signal handlers and logging alone. The endpoints
themselves are tested on both servers by the rest of tests/oauth."""

from __future__ import annotations

import http.client
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from delegation_service.app import Application, RunningApplication
from delegation_service.audit import AuditLog
from delegation_service.config import Config, ConfigError
from delegation_service.transport.authz import AccessGate
from delegation_service.transport.oauth.endpoints import OAuthSettings
from delegation_service.transport.oauth.granian_server import GranianOAuthServer
from delegation_service.transport.oauth.threads import OAuthHttpServer
from tests.integration.harness import SERVICE_ISSUER, build_test_app
from tests.oauth.conftest import OAUTH_SERVERS
from tests.security.pki import Pki, make_pki

Server = OAuthHttpServer | GranianOAuthServer
JWKS = "/.well-known/jwks.json"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def app() -> Application:
    application, _, _ = build_test_app(store="memory", admin_listen="", oauth_listen="")
    return application


@pytest.fixture
def start(app: Application) -> Iterator[Callable[..., Server]]:
    """Start an OAuth server of the given kind on a loopback port; stopped at the end of the test."""
    started: list[Server] = []

    def start_server(kind: str, **settings: object) -> Server:
        server_class = OAuthHttpServer if kind == "threads" else GranianOAuthServer
        assert isinstance(app.access, AccessGate)
        server = server_class(
            OAuthSettings("127.0.0.1:0", **settings),  # type: ignore[arg-type]
            app.service,
            app.access,
            app.dpop,
            lambda base: {"issuer": SERVICE_ISSUER},
            audit=AuditLog(),
        ).start()
        started.append(server)
        return server

    yield start_server
    for server in started:
        server.stop(0)


def get(server: Server, connection: http.client.HTTPConnection | None = None) -> int:
    """GET the JWKS (on ``connection``, kept open, when given); the status."""
    if connection is None:
        return requests.get(f"http://127.0.0.1:{server.port}{JWKS}", timeout=5).status_code
    connection.request("GET", JWKS)
    answer = connection.getresponse()
    answer.read()
    return answer.status


def native_threads() -> set[str]:
    return set(os.listdir("/proc/self/task"))


@pytest.mark.parametrize("kind", OAUTH_SERVERS)
def test_start_serves_and_stop_closes_the_port_and_leaves_no_thread(
    app: Application, kind: str, start: Callable[..., Server]
) -> None:
    threads_before, native_before = set(threading.enumerate()), native_threads()
    server = start(kind)
    assert get(server) == 200
    idle = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    assert get(server, idle) == 200

    began = time.monotonic()
    server.stop(5)

    assert time.monotonic() - began < 2  # an idle keep-alive connection does not hold the stop
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
    deadline = time.monotonic() + 2  # the standard library's connection threads end on their own
    while (set(threading.enumerate()) - threads_before or native_threads() - native_before) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.01)
    assert set(threading.enumerate()) - threads_before == set()
    assert native_threads() - native_before == set()
    idle.close()


@pytest.mark.parametrize("kind", OAUTH_SERVERS)
def test_stop_lets_the_request_in_flight_finish(
    app: Application, kind: str, start: Callable[..., Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    entered = threading.Event()

    def slow_revoke(token: str, *, caller: str) -> None:
        entered.set()
        time.sleep(0.5)

    monkeypatch.setattr(app.service, "revoke", slow_revoke)
    server = start(kind)
    answers: list[int] = []
    caller = threading.Thread(
        target=lambda: answers.append(
            requests.post(
                f"http://127.0.0.1:{server.port}/oauth2/revoke", data={"token": "t"}, headers=FORM, timeout=5
            ).status_code
        )
    )
    caller.start()
    assert entered.wait(5)

    began = time.monotonic()
    server.stop(5)
    caller.join(5)

    assert answers == [200]
    assert 0.2 < time.monotonic() - began < 3


@pytest.mark.parametrize("kind", OAUTH_SERVERS)
def test_a_draining_service_refuses_new_oauth_requests_as_grpc_does(kind: str) -> None:
    application, _, _ = build_test_app(
        store="memory", admin_listen="", oauth_listen="127.0.0.1:0", oauth_server=kind
    )
    running = application.serve(admin=True)
    assert isinstance(running, RunningApplication) and running.oauth is not None
    url = running.oauth.base_url + "/oauth2/revoke"
    try:
        assert requests.post(url, data={"token": "t"}, headers=FORM, timeout=5).status_code == 200

        assert running.drain(grace=1.0)
        answer = requests.post(url, data={"token": "t"}, headers=FORM, timeout=5)

        assert answer.status_code == 503
        assert answer.json()["error"] == "temporarily_unavailable"
        assert answer.json()["reason"] == "SERVER_DRAINING"
        assert answer.headers["Connection"] == "close"
        # The documents stay: a caller may still read the metadata and the keys of a child it holds.
        assert requests.get(running.oauth.base_url + JWKS, timeout=5).status_code == 200
    finally:
        running.stop(0)


@pytest.mark.parametrize("kind", OAUTH_SERVERS)
def test_connections_past_the_bound(kind: str, start: Callable[..., Server]) -> None:
    """Threads: past the bound a 503 at once. granian: the new connection waits for a free slot."""
    server = start(kind, max_connections=2)
    held = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=5) for _ in range(2)]
    for connection in held:
        assert get(server, connection) == 200
    answers: list[int] = []
    third = threading.Thread(target=lambda: answers.append(get(server)))
    third.start()
    third.join(0.5)

    if kind == "threads":
        assert answers == [503]
    else:
        assert answers == []  # waiting in the listen backlog
        held[0].close()
        third.join(5)
        assert answers == [200]
    for connection in held:
        connection.close()


@pytest.mark.parametrize("kind", OAUTH_SERVERS)
def test_an_idle_keep_alive_connection_is_closed(kind: str, start: Callable[..., Server]) -> None:
    server = start(kind, idle_seconds=0.5)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    assert get(server, connection) == 200
    time.sleep(1.5)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        get(server, connection)


@pytest.mark.parametrize("kind", OAUTH_SERVERS)
def test_a_taken_port_is_a_clear_error(app: Application, kind: str) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    server_class = OAuthHttpServer if kind == "threads" else GranianOAuthServer
    assert isinstance(app.access, AccessGate)
    with pytest.raises(RuntimeError, match=f"cannot listen on 127.0.0.1:{port} \\(oauth.listen\\)"):
        server_class(
            OAuthSettings(f"127.0.0.1:{port}"),
            app.service,
            app.access,
            app.dpop,
            lambda base: {},
            audit=AuditLog(),
        )
    taken.close()


def test_granian_leaves_our_signal_handlers_and_logging_alone(start: Callable[..., Server]) -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    sigterm, sigint = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)

    server = start("granian")
    assert get(server) == 200

    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == (sigterm, sigint)
    assert (list(root.handlers), root.level) == (handlers, level)
    # granian's own logger reaches ours, errors only (the access line is ours).
    granian_log = logging.getLogger("_granian")
    assert granian_log.propagate and granian_log.level == logging.ERROR


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(Path(tmp_path_factory.mktemp("granian-pki")))


def test_granian_serves_https_with_the_grpc_ports_certificate(pki: Pki) -> None:
    app, _, _ = build_test_app(
        store="memory",
        admin_listen="",
        oauth_listen="127.0.0.1:0",
        oauth_server="granian",
        tls_cert_file=pki.server.cert_file,
        tls_key_file=pki.server.key_file,
    )
    running = app.serve(admin=True)
    assert isinstance(running, RunningApplication) and running.oauth is not None
    try:
        assert isinstance(running.oauth, GranianOAuthServer)
        assert running.oauth.base_url.startswith("https://")
        metadata = requests.get(
            running.oauth.base_url + "/.well-known/oauth-authorization-server",
            verify=str(pki.ca_file),
            timeout=5,
        ).json()
        assert metadata["token_endpoint"] == running.oauth.base_url + "/oauth2/token"
        assert "tls_client_certificate_bound_access_tokens" not in metadata
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(running.oauth.base_url.replace("https", "http") + JWKS, timeout=5)
    finally:
        running.stop(0)


def test_without_granian_the_start_up_error_names_the_extra(
    app: Application, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == "granian" or m.startswith("granian.")] + ["granian"]:
        monkeypatch.setitem(sys.modules, name, None)  # importing it raises ImportError
    monkeypatch.delitem(sys.modules, "delegation_service.transport.oauth.granian_server")
    configured, _, _ = build_test_app(
        store="memory", admin_listen="", oauth_listen="127.0.0.1:0", oauth_server="granian"
    )

    with pytest.raises(ConfigError, match="fast-http") as raised:
        configured.oauth_server()
    assert raised.value.setting == "oauth.server"
    with pytest.raises(ConfigError, match="fast-http"):
        configured.serve(admin=True)  # and the gRPC server it started is stopped again


def test_the_oauth_server_setting_is_checked() -> None:
    base = {"issuer": SERVICE_ISSUER, "oauth_listen": "127.0.0.1:0"}
    with pytest.raises(ConfigError, match="threads, granian") as raised:
        Config(**base, oauth_server="nginx").validate()  # type: ignore[arg-type]
    assert raised.value.setting == "oauth.server"
    assert Config(**base, oauth_server="granian").validate().oauth_server == "granian"  # type: ignore[arg-type]


def test_granian_with_client_certificates_is_refused(pki: Pki) -> None:
    tls = {
        "issuer": SERVICE_ISSUER,
        "tls_cert_file": pki.server.cert_file,
        "tls_key_file": pki.server.key_file,
        "tls_client_ca_file": pki.ca_file,
    }
    with pytest.raises(ConfigError, match="client certificates") as raised:
        Config(**tls, oauth_listen="127.0.0.1:0", oauth_server="granian").validate()  # type: ignore[arg-type]
    assert raised.value.setting == "oauth.server"
    # Without the OAuth port, mutual TLS on gRPC is no concern of granian's.
    assert Config(**tls, oauth_server="granian").validate()  # type: ignore[arg-type]
    assert Config(**tls, oauth_listen="127.0.0.1:0").validate()  # type: ignore[arg-type]
