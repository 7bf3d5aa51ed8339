"""The OAuth port on granian (``oauth.server = "granian"``, the ``fast-http`` extra): a native (Rust,
hyper) HTTP/1.1 core, and the same rules (:class:`~.protocol.OAuthHttp`) as the standard library's
server, through granian's RSGI interface on an asyncio loop of its own thread.

Measured (a token exchange, warm parent, 64 in flight): 423 µs of server CPU per call against 792 µs on
the standard library's server with logging off, 653 against 867 µs with the access lines on
(``bench.oauth``); the parsing, the connection handling and the writes leave Python. One request at a
time it costs more than the standard library's server (the hand-off between granian's threads and the
loop is not shared), so it is an option for a busy port, not the default.

What differs from :mod:`.threads`:

- past :data:`~.endpoints.MAX_CONNECTIONS` open connections a new one waits in the listen backlog
  (granian's ``backpressure``) until one closes, instead of a 503 at once;
- no client certificate reaches the application, so certificate-bound children and certificate
  identities are not served here (the configuration refuses ``tls.client_ca_file`` with it);
- TLS is granian's (rustls), from the same PEM files, TLS 1.2 at least.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

from granian._granian import RSGIHTTPProtocol, SocketHolder
from granian.constants import HTTPModes, Interfaces, SSLProtocols
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.rsgi import Scope
from granian.server.embed import Server

from delegation_service.adapters.dpop import DpopVerifier
from delegation_service.domain.ports import AuditSink
from delegation_service.service import DelegationService
from delegation_service.transport.authz import AccessGate
from delegation_service.transport.http_listen import BACKLOG, cannot_listen, split_listen
from delegation_service.transport.oauth.endpoints import Answer, OAuthSettings
from delegation_service.transport.oauth.protocol import (
    Headers,
    HttpRequest,
    OAuthHttp,
    log,
    oauth_http,
    public_base_url,
)

START_SECONDS = 10.0
THREADS_END_SECONDS = 2.0
# granian configures the logging module when its server is built. Incremental: it only sets the level
# of its own logger ('_granian', also the Rust core's), which then propagates to ours; our handlers,
# formatters and other loggers are left as they are. Errors only: the access line is ours.
_LOGGING = {
    "version": 1,
    "incremental": True,
    "handlers": {},
    "loggers": {"_granian": {"propagate": True}, "granian.access": {"propagate": True}},
}


class GranianOAuthServer:
    """The OAuth face on granian's embedded server, on a thread with its own asyncio loop."""

    def __init__(
        self,
        settings: OAuthSettings,
        service: DelegationService,
        gate: AccessGate,
        dpop: DpopVerifier | None,
        metadata: Callable[[str], Mapping[str, object]],
        *,
        audit: AuditSink,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        host, port = split_listen(settings.listen)
        host = host or "0.0.0.0"  # noqa: S104
        # The socket is ours: a taken port fails here, as on the other server, the port is known at
        # once (also for port 0), and SO_REUSEPORT is set only for `serve --workers`.
        listener = _listen(host, port, settings.reuse_port, settings.listen)
        self.port: int = listener.getsockname()[1]
        self.base_url = public_base_url(settings, host, self.port, tls is not None)
        self.rules, self.metadata_members = oauth_http(
            self.base_url, service, gate, dpop, metadata=metadata, audit=audit, certificate_bound=False
        )
        self._idle_seconds = settings.idle_seconds
        self._server = _EmbeddedServer(
            _listener=listener,
            target=self,
            address=host,
            port=self.port,
            interface=Interfaces.RSGI,
            http=HTTPModes.http1,
            websockets=False,
            backlog=BACKLOG,
            # Connections served at once; past it, new ones wait in the listen backlog.
            backpressure=settings.max_connections,
            # Also the wait for the next request on a keep-alive connection: an idle one is closed.
            http1_settings=HTTP1Settings(header_read_timeout=int(settings.idle_seconds * 1000)),
            log_dictconfig=_LOGGING,
            log_level=LogLevels.error,
            ssl_cert=tls[0] if tls is not None else None,
            ssl_key=tls[1] if tls is not None else None,
            ssl_protocol_min=SSLProtocols.tls12,
        )
        self._loop = asyncio.new_event_loop()
        self._listening = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="oauth-granian", daemon=True)
        self._native: set[str] = set()

    async def __rsgi__(self, scope: Scope, proto: RSGIHTTPProtocol) -> None:
        """One request: the shared rules, inline on the loop.

        Inline, not in an executor: the use cases are synchronous and short, and each of their store
        waits is capped by the request's deadline (5 s) and by the store's circuit breaker, so the loop
        is never held longer than a request may take anyway; an executor hop cost 50% more CPU per call
        (measured: 634 against 423 µs per token exchange at 64 in flight).
        """
        started = time.monotonic()
        host, _, port = scope.client.rpartition(":")
        # RSGIHeaders has get_all at run time; its stub leaves it out.
        headers = cast(Headers, scope.headers)
        request = HttpRequest(
            scope.method, scope.path, scope.query_string, headers, host.strip("[]"), int(port or 0)
        )
        rules = self.rules
        step = rules.begin(request)
        if not isinstance(step, int):
            _send(proto, rules, request, step, started)
            return
        try:
            async with asyncio.timeout(self._idle_seconds):
                body = await proto()
        except TimeoutError:
            _send(proto, rules, request, rules.body_timeout(), started)
            return
        with rules.serving():  # until the answer is handed to granian
            _send(proto, rules, request, rules.answer(request, body), started)

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        """Called by granian as its worker starts on ``loop``: listening from the next loop turn."""
        loop.call_soon(self._started)

    def _started(self) -> None:
        # A worker that failed to start (its task raised) is not alive; granian leaves is_alive untyped.
        if not all(worker.is_alive() for worker in self._server.wrks):  # type: ignore[no-untyped-call]
            self._failure = RuntimeError("granian's worker did not start")
        self._listening.set()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._server.serve())
        except BaseException as failure:
            self._failure = failure
        finally:
            self._listening.set()
            self._loop.close()

    def start(self) -> GranianOAuthServer:
        """Serve in the background; returns once granian accepts on the port."""
        before = _native_threads()
        self._thread.start()
        listening = self._listening.wait(START_SECONDS)
        self._native = _native_threads() - before
        if not listening or self._failure is not None:
            self.stop(0)
            raise RuntimeError(f"oauth.server granian did not start: {self._failure or 'timed out'}")
        log.info(
            "oauth http serving",
            extra={"event": "oauth_serving", "port": self.port, "server": "granian"},
        )
        return self

    def stop(self, grace_seconds: float = 5.0) -> None:
        """Stop accepting, let the requests being answered finish (up to ``grace_seconds``), close."""
        if not self._thread.is_alive():
            self._server.close_listener()
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: it has stopped already
            self._loop.call_soon_threadsafe(self._server.stop)
        self._thread.join(timeout=grace_seconds + 1.0)
        if self._thread.is_alive():
            log.warning("oauth http: requests still in flight at shutdown", extra={"event": "oauth_stop"})
            return
        # granian's Rust threads end a few milliseconds after its loop returns; an interpreter that
        # exits before they do aborts the process (a panic in a function that cannot unwind), so the
        # stop waits for them (measured: 5 ms).
        deadline = time.monotonic() + THREADS_END_SECONDS
        while self._native & _native_threads() and time.monotonic() < deadline:
            time.sleep(0.005)


def _send(
    proto: RSGIHTTPProtocol, rules: OAuthHttp, request: HttpRequest, answer: Answer, started: float
) -> None:
    """Log the request's line, then answer: its audit event is written before the caller has the answer."""
    rules.log_access(request, answer, started)
    proto.response_bytes(int(answer.status), rules.response_headers(answer), answer.body)


def _native_threads() -> set[str]:
    """The process's threads as the kernel lists them (Linux; elsewhere none, and nothing waits)."""
    try:
        return set(os.listdir("/proc/self/task"))
    except OSError:
        return set()


def _listen(host: str, port: int, reuse_port: bool, listen: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind((host, port))
        listener.listen(BACKLOG)
    except OSError as error:
        listener.close()
        raise cannot_listen(listen, "oauth.listen", error) from None
    return listener


class _EmbeddedServer(Server):
    """granian's embedded server on a socket we made (``_init_shared_socket`` is where granian builds
    its own; the Rust core takes ownership of the descriptor and closes it when it stops)."""

    def __init__(self, *, _listener: socket.socket, **options: Any) -> None:
        super().__init__(**options)
        self._listener: socket.socket | None = _listener

    def _init_shared_socket(self) -> None:
        listener, self._listener = self._listener, None
        assert listener is not None, "granian's embedded server is started once"
        # SocketHolder(fd, is_uds, backlog) is how granian rebuilds a holder it pickled
        # (granian/net.py); its stub declares no constructor.
        self._shd = SocketHolder(listener.detach(), False, BACKLOG)  # type: ignore[call-arg,assignment]
        self._ssp = None

    def close_listener(self) -> None:
        """Close the socket when the server never started."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
