"""HTTP forward-auth over the verifier: what nginx ``auth_request``, Traefik ``ForwardAuth`` and Caddy
``forward_auth`` call.

``GET /auth`` reads ``Authorization: Bearer`` (or ``DPoP``) and the original path (nginx:
``X-Original-URI``, which the README's snippet sets; Traefik and Caddy: ``X-Forwarded-Uri``); for a
DPoP-bound child also the ``DPoP`` proof, ``X-Forwarded-Method`` (or ``X-Original-Method``),
``X-Forwarded-Proto`` and ``X-Forwarded-Host``, from which the URL the proof must name is rebuilt;
and answers 200 with the identity headers, 401 or 403 with ``WWW-Authenticate``, or 503 when it
cannot decide. ``GET /metrics`` is the Prometheus exposition; ``GET /healthz`` is 200 while the mirror
is within its staleness bound.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from delegation_service.edge.verifier import EdgeVerifier, RequestFacts

log = logging.getLogger(__name__)

_PATH_HEADERS = ("X-Original-URI", "X-Forwarded-Uri")


class ForwardAuthServer:
    """The forward-auth HTTP server on its own thread."""

    def __init__(self, verifier: EdgeVerifier, host: str, port: int) -> None:
        handler = type("_BoundHandler", (_Handler,), {"verifier": verifier})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="edge-forward-auth", daemon=True
        )

    @property
    def port(self) -> int:
        """The port bound (useful with port 0)."""
        return int(self._server.server_address[1])

    def start(self) -> ForwardAuthServer:
        """Start serving."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)


class _Handler(BaseHTTPRequestHandler):
    verifier: EdgeVerifier
    protocol_version = "HTTP/1.1"  # keep-alive: nginx reuses the connection for subrequests

    def do_GET(self) -> None:
        route = urlsplit(self.path).path
        if route == "/auth":
            self._auth()
        elif route == "/metrics":
            self._reply(200, self.verifier.metrics.exposition(), "text/plain; version=0.0.4")
        elif route == "/healthz":
            fresh = self.verifier.staleness() <= self.verifier.settings.max_staleness_seconds
            self._reply(200 if fresh else 503, b"ok\n" if fresh else b"stale\n", "text/plain")
        else:
            self._reply(404, b"not found\n", "text/plain")

    def _auth(self) -> None:
        original = next((self.headers[h] for h in _PATH_HEADERS if self.headers.get(h)), "/")
        path = urlsplit(original).path or "/"
        host = self.headers.get("X-Forwarded-Host")
        scheme = self.headers.get("X-Forwarded-Proto", "https")
        facts = RequestFacts(
            method=self.headers.get("X-Forwarded-Method") or self.headers.get("X-Original-Method") or "GET",
            url=f"{scheme}://{host}{path}" if host else None,
            dpop_proofs=tuple(self.headers.get_all("DPoP") or ()),
        )
        decision = self.verifier.check(self.headers.get("Authorization"), path, facts)
        self._reply(decision.outcome.value, b"", "text/plain", decision.headers)

    def _reply(
        self, status: int, body: bytes, content_type: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in headers:
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        # One line per check would flood the log; decisions are counted in the metrics instead.
        return
