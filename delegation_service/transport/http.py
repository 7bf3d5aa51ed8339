"""The admin HTTP port: metrics, the JWK Set and the RFC 8414 metadata, liveness and readiness.

Gateways such as Envoy fetch a JWKS over HTTP (a gRPC ``GetJwks`` is not enough), Prometheus scrapes
over HTTP, and Kubernetes probes are simplest over HTTP. The standard library's threading HTTP server is
plenty for a handful of small GET endpoints; no web framework is needed.

- ``GET /metrics``: Prometheus text format (or OpenMetrics when the scraper asks for it).
- ``GET /.well-known/jwks.json``: the public keys that verify child tokens, with ``Cache-Control`` and an
  ``ETag``; the body is serialised again only when the keys change (automatic rotation).
- ``GET /.well-known/oauth-authorization-server``: RFC 8414 metadata (issuer, jwks_uri, algorithms).
- ``GET /livez``: 200 while the process serves HTTP at all.
- ``GET /readyz``: 200 while the store answers and the server is not draining, else 503.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import ClassVar

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from delegation_service.transport.http_listen import HttpPortServer, cannot_listen, split_listen

log = logging.getLogger(__name__)

JWKS_PATH = "/.well-known/jwks.json"
METADATA_PATH = "/.well-known/oauth-authorization-server"
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})  # noqa: S104 (names them, binds nothing)
JSON = "application/json"


@dataclass(frozen=True)
class AdminSettings:
    """What the admin port serves and where."""

    listen: str
    issuer: str
    jwks: Mapping[str, object] | Callable[[], Mapping[str, object]]
    """The JWK Set, or where to read the current one (keys that rotate while serving)."""
    public_url: str = ""
    """Base URL gateways reach this port at; empty: ``http://<listen>``, or the issuer on a wildcard."""
    jwks_max_age_seconds: int = 300
    extra_metadata: Mapping[str, object] = field(default_factory=dict)
    """More RFC 8414 members: the OAuth endpoints, when that port is on."""


@dataclass(frozen=True)
class _Document:
    body: bytes
    content_type: str
    cache_control: str
    etag: str


class AdminHttpServer:
    """A started admin HTTP server on its own daemon thread."""

    def __init__(
        self,
        settings: AdminSettings,
        registry: CollectorRegistry,
        ready: Callable[[], bool],
    ) -> None:
        host, port = split_listen(settings.listen)
        handler: type[_AdminHandler] = type(
            "AdminHandler", (_AdminHandler,), {"documents": None, "registry": registry, "ready": ready}
        )
        try:
            self._server = HttpPortServer((host or "0.0.0.0", port), handler)  # noqa: S104
        except OSError as error:
            raise cannot_listen(settings.listen, "admin.listen", error) from None
        self.port: int = self._server.server_address[1]
        base = (settings.public_url or self._own_url(host, settings.issuer)).rstrip("/")
        self.jwks_uri = base + JWKS_PATH
        handler.documents = _KeyDocuments(settings, self.jwks_uri)
        self._thread = threading.Thread(target=self._server.serve_forever, name="admin-http", daemon=True)

    def _own_url(self, host: str, issuer: str) -> str:
        if host in WILDCARD_HOSTS:
            return issuer  # a wildcard address is no URL anyone can use; the issuer is the public name
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def start(self) -> AdminHttpServer:
        """Serve in the background."""
        self._thread.start()
        log.info("admin http serving", extra={"event": "admin_serving", "port": self.port})
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _KeyDocuments:
    """The JWKS and metadata documents, serialised again only when the JWK Set changes."""

    def __init__(self, settings: AdminSettings, jwks_uri: str) -> None:
        jwks = settings.jwks
        self._source: Callable[[], Mapping[str, object]] = jwks if callable(jwks) else lambda: jwks
        self._issuer = settings.issuer
        self._extra = dict(settings.extra_metadata)
        self._jwks_uri = jwks_uri
        self._cache = f"public, max-age={settings.jwks_max_age_seconds}"
        self._built: tuple[Mapping[str, object], dict[str, _Document]] | None = None

    def get(self, path: str) -> _Document | None:
        jwks = self._source()
        built = self._built
        if built is None or built[0] != jwks:
            built = self._built = (
                jwks,
                {
                    JWKS_PATH: _document(jwks, self._cache),
                    METADATA_PATH: _document(
                        {**metadata(self._issuer, self._jwks_uri, jwks), **self._extra}, self._cache
                    ),
                },
            )
        return built[1].get(path)


def _document(content: object, cache_control: str) -> _Document:
    body = json.dumps(content, separators=(",", ":"), sort_keys=True).encode()
    return _Document(body, JSON, cache_control, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def metadata(issuer: str, jwks_uri: str, jwks: Mapping[str, object]) -> dict[str, object]:
    """RFC 8414 authorization server metadata for what this service is: an issuer of access tokens.

    It runs no authorization endpoint (tokens are minted over gRPC, or by token exchange on the OAuth
    port, whose endpoints :mod:`.oauth.endpoints` adds), so ``response_types`` is empty. The algorithms its
    tokens are signed with have no registered member; they are published as
    ``access_token_signing_alg_values_supported`` (RFC 8414 §2 allows additional members).
    """
    keys = jwks.get("keys")
    algorithms = sorted(
        {str(k["alg"]) for k in keys if isinstance(k, Mapping) and "alg" in k}
        if isinstance(keys, list)
        else ()
    )
    return {
        "issuer": issuer,
        "jwks_uri": jwks_uri,
        "response_types_supported": [],
        "access_token_signing_alg_values_supported": algorithms,
    }


class _AdminHandler(BaseHTTPRequestHandler):
    """GET and HEAD on a fixed set of paths; anything else is 404 or 405."""

    documents: ClassVar[_KeyDocuments]
    registry: ClassVar[CollectorRegistry]
    ready: ClassVar[Callable[[], bool]]
    protocol_version = "HTTP/1.1"  # keep-alive for scrapers; every response has a Content-Length
    server_version = "delegation-service"
    sys_version = ""

    def do_GET(self) -> None:
        """Serve one of the endpoints."""
        self._respond(send_body=True)

    def do_HEAD(self) -> None:
        """As GET, without the body."""
        self._respond(send_body=False)

    def _respond(self, send_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        document = type(self).documents.get(path)
        if document is not None:
            if self.headers.get("If-None-Match") == document.etag:
                self._send(HTTPStatus.NOT_MODIFIED, b"", document.content_type, send_body, document)
            else:
                self._send(HTTPStatus.OK, document.body, document.content_type, send_body, document)
        elif path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._send(HTTPStatus.OK, encoder(self.registry), content_type, send_body)
        elif path == "/livez":
            self._send(HTTPStatus.OK, b"ok\n", "text/plain; charset=utf-8", send_body)
        elif path == "/readyz":
            ready = _safely(type(self).ready)
            status = HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE
            self._send(status, b"ok\n" if ready else b"not ready\n", "text/plain; charset=utf-8", send_body)
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8", send_body)

    def do_POST(self) -> None:
        """Nothing here accepts a body."""
        self.send_error(HTTPStatus.METHOD_NOT_ALLOWED)

    def do_PUT(self) -> None:
        """Nothing here accepts a body."""
        self.send_error(HTTPStatus.METHOD_NOT_ALLOWED)

    def do_DELETE(self) -> None:
        """Nothing here can be deleted."""
        self.send_error(HTTPStatus.METHOD_NOT_ALLOWED)

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        send_body: bool,
        document: _Document | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if document is not None:
            self.send_header("Cache-Control", document.cache_control)
            self.send_header("ETag", document.etag)
        else:
            self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if send_body and body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Route the standard library's request log to DEBUG (scrapes and probes are frequent)."""
        log.debug("admin http " + format, *args)


def _safely(probe: Callable[[], bool]) -> bool:
    try:
        return bool(probe())
    except Exception:
        log.exception("readiness probe failed")
        return False
