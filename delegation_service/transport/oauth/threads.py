"""The OAuth port on the standard library's HTTP server (``oauth.server = "threads"``, the default): a
thread per connection, up to :data:`~.endpoints.MAX_CONNECTIONS`; past it a 503 at once.

A socket shell around :class:`~.protocol.OAuthHttp`, which holds every HTTP rule of the port.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

from delegation_service.adapters.dpop import DpopVerifier
from delegation_service.domain.ports import AuditSink
from delegation_service.service import DelegationService
from delegation_service.transport.authz import AccessGate
from delegation_service.transport.http_listen import HttpPortServer, cannot_listen, split_listen
from delegation_service.transport.oauth.endpoints import Answer, OAuthSettings
from delegation_service.transport.oauth.protocol import (
    HttpRequest,
    OAuthHttp,
    log,
    oauth_http,
    public_base_url,
)
from delegation_service.transport.tls import certificate_facts


class OAuthHttpServer:
    """The OAuth face on a threading HTTP server of its own, started on a daemon thread."""

    def __init__(
        self,
        settings: OAuthSettings,
        service: DelegationService,
        gate: AccessGate,
        dpop: DpopVerifier | None,
        metadata: Callable[[str], Mapping[str, object]],
        *,
        audit: AuditSink,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        host, port = split_listen(settings.listen)
        handler: type[_OAuthHandler] = type("OAuthHandler", (_OAuthHandler,), {})
        handler.timeout = settings.idle_seconds
        try:
            self._server = _BoundedServer(
                (host or "0.0.0.0", port),  # noqa: S104
                handler,
                settings.max_connections,
                settings.reuse_port,
            )
        except OSError as error:
            raise cannot_listen(settings.listen, "oauth.listen", error) from None
        self._server.tls = tls
        self._server.idle_seconds = settings.idle_seconds
        self.port: int = self._server.server_address[1]
        self.base_url = public_base_url(settings, host, self.port, tls is not None)
        certificate_bound = tls is not None and tls.verify_mode is not ssl.CERT_NONE
        self.rules, self.metadata_members = oauth_http(
            self.base_url,
            service,
            gate,
            dpop,
            metadata=metadata,
            audit=audit,
            certificate_bound=certificate_bound,
        )
        handler.rules = self.rules
        self._thread = threading.Thread(target=self._server.serve_forever, name="oauth-http", daemon=True)

    def start(self) -> OAuthHttpServer:
        """Serve in the background."""
        self._thread.start()
        log.info(
            "oauth http serving",
            extra={"event": "oauth_serving", "port": self.port, "server": "threads"},
        )
        return self

    def stop(self, grace_seconds: float = 5.0) -> None:
        """Stop accepting, let the requests being answered finish (up to ``grace_seconds``), close."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        if not self.rules.wait_idle(grace_seconds):
            log.warning("oauth http: requests still in flight at shutdown", extra={"event": "oauth_stop"})
        # Idle keep-alive connections would hold their threads until their idle timeout.
        self._server.close_connections()


class _BoundedServer(HttpPortServer):
    """A thread per connection, up to ``max_connections``; past it a 503 at once, and no thread."""

    tls: ssl.SSLContext | None = None
    """TLS, handshaken on the connection's own thread (a slow handshake never holds the accept loop)."""
    idle_seconds: float = 10.0

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], slots: int, reuse_port: bool
    ) -> None:
        self._slots = threading.BoundedSemaphore(slots)
        self.allow_reuse_port = reuse_port
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        super().__init__(address, handler)

    def close_connections(self) -> None:
        """End every open connection (their threads see the end of the stream and return)."""
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve on a thread of its own, when a slot is free."""
        if not self._slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\n"
                    b"Connection: close\r\n\r\n"
                )
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve (after the TLS handshake, when on), then give the slot back."""
        with self._lock:
            self._connections.add(request)
        try:
            if self.tls is not None:
                request.settimeout(self.idle_seconds)
                try:
                    request = self.tls.wrap_socket(request, server_side=True)
                except (OSError, ssl.SSLError):
                    self.shutdown_request(request)
                    return
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._connections.discard(request)
            self._slots.release()


class _OAuthHandler(BaseHTTPRequestHandler):
    """Every method goes to the shared rules (:class:`~.protocol.OAuthHttp`); this class moves bytes."""

    rules: ClassVar[OAuthHttp]
    protocol_version = "HTTP/1.1"
    server_version = "delegation-service"
    sys_version = ""
    # Headers and body leave in two writes: without TCP_NODELAY the second waits for the client's
    # delayed ACK on a keep-alive connection (measured: 48 ms per token exchange instead of ~2).
    disable_nagle_algorithm = True

    def _serve(self) -> None:
        started = time.monotonic()
        path, _, query = self.path.partition("?")
        request = HttpRequest(
            self.command,
            path,
            query,
            self.headers,
            str(self.client_address[0]),
            int(self.client_address[1]),
            certificate_facts(self.connection),
        )
        step = self.rules.begin(request)
        if isinstance(step, int):
            try:
                body = self.rfile.read(step)
            except (TimeoutError, OSError):
                self._send(request, self.rules.body_timeout(), started)
                return
            with self.rules.serving():  # until the answer is written: stop() then closes the connection
                self._send(request, self.rules.answer(request, body), started)
        else:
            self._send(request, step, started)

    def _send(self, request: HttpRequest, answer: Answer, started: float) -> None:
        # The line first: a request's audit event is written before the caller has the answer.
        self.rules.log_access(request, answer, started)
        if answer.close:
            self.close_connection = True
        self.send_response(answer.status)
        self.send_header("Content-Length", str(len(answer.body)))
        for name, value in self.rules.response_headers(answer):
            self.send_header(name, value)
        self.end_headers()
        if answer.body:
            self.wfile.write(answer.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _serve  # noqa: N815 (its names)

    def log_message(self, format: str, *args: object) -> None:
        """The standard library's request line goes to DEBUG; the access line is the record."""
        log.debug("oauth http " + format, *args)
