"""The HTTP rules of the OAuth port, whatever server carries the bytes.

Both servers (:mod:`.threads`, the standard library's; :mod:`.granian_server`, granian's native core)
are socket shells around :class:`OAuthHttp`: they hand it a request's head as an :class:`HttpRequest`,
read the body only when :meth:`OAuthHttp.begin` asks for it (and how much), send the :class:`Answer` it
returns and let it write the access line. Every rule lives here once:

- routing: ``GET`` on the two documents, ``POST`` on the three endpoints; another path 404, another
  method 405 with ``Allow``;
- the body: ``application/x-www-form-urlencoded`` (else 415), a ``Content-Length`` (else 411) of at most
  :data:`~.endpoints.MAX_BODY_BYTES` (else 413); no parameter in the query string; the form's own rules
  (:func:`~.endpoints.parse_form`);
- the ``DPoP`` and ``Authorization`` headers, and the connection's client certificate, to the endpoints;
- a :class:`~delegation_service.domain.errors.DelegationError` as RFC 6749 JSON
  (:func:`~delegation_service.transport.errors.oauth_error`); anything else a bare 500, the traceback in
  the server's log only;
- each request's deadline (:func:`~delegation_service.deadlines.call_deadline`);
- the access line (``event: http``): method, path, status, duration, reason and peer; never a body, a
  query string or a token.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Protocol

from delegation_service import audit
from delegation_service.adapters.dpop import DpopVerifier
from delegation_service.deadlines import call_deadline
from delegation_service.domain.errors import DelegationError, ServerDraining
from delegation_service.domain.ports import AuditSink
from delegation_service.logs import emit
from delegation_service.service import DelegationService
from delegation_service.transport.authz import AccessGate
from delegation_service.transport.errors import oauth_error
from delegation_service.transport.oauth.endpoints import (
    FORM,
    INTROSPECT_PATH,
    JWKS_PATH,
    MAX_BODY_BYTES,
    METADATA_PATH,
    NO_CERTIFICATE,
    NO_STORE,
    REQUEST_SECONDS,
    REVOKE_PATH,
    TOKEN_PATH,
    Answer,
    Certificate,
    OAuthEndpoints,
    OAuthSettings,
    invalid_request,
    json_body,
    oauth_metadata,
    parse_form,
)

log = logging.getLogger("delegation_service.transport.oauth_http")
"""The OAuth port's logger, for both servers (its name kept from the single-module days: log routes
name it)."""
"""The access line's logger (the name it has always had, so log filters keep working)."""

ENDPOINT_PATHS = frozenset({TOKEN_PATH, INTROSPECT_PATH, REVOKE_PATH})
ALLOW = (("Allow", "GET, POST"),)
DOCUMENT_CACHE = (("Cache-Control", "public, max-age=300"),)
UNAUTHORIZED = ("WWW-Authenticate", 'Bearer realm="delegation-service"')


class Headers(Protocol):
    """A request's headers as both servers give them (names are case-insensitive)."""

    def get(self, name: str, /) -> str | None:
        """The first value of ``name``, or ``None``."""

    def get_all(self, name: str, /) -> list[str] | None:
        """Every value of ``name`` (``None`` or empty when absent)."""


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A request's head, as the server parsed it."""

    method: str
    path: str
    """The path alone, without the query string."""
    query: str
    headers: Headers
    peer_host: str
    peer_port: int
    certificate: Certificate = NO_CERTIFICATE
    """The connection's verified client certificate (mutual TLS), if any."""

    @property
    def peer(self) -> str:
        """The caller's address as the access gate names it (as gRPC does)."""
        if ":" in self.peer_host:
            return f"ipv6:[{self.peer_host}]:{self.peer_port}"
        return f"ipv4:{self.peer_host}:{self.peer_port}"


class OAuthServer(Protocol):
    """What the application holds of either server (``oauth.server``)."""

    port: int
    base_url: str
    metadata_members: dict[str, object]
    """The RFC 8414 members naming its endpoints (the admin port's metadata lists them too)."""
    rules: OAuthHttp

    def start(self) -> OAuthServer:
        """Serve in the background; returns once the port accepts."""

    def stop(self, grace_seconds: float = 5.0) -> None:
        """Stop accepting, let the requests being answered finish (up to ``grace_seconds``), close."""


class OAuthHttp:
    """The OAuth port's HTTP rules, as functions of a request: no sockets."""

    def __init__(self, endpoints: OAuthEndpoints, documents: Mapping[str, Callable[[], bytes]]) -> None:
        self._endpoints = endpoints
        self._documents = documents
        self._in_flight = 0
        self._idle = threading.Condition()
        self._refusing = False

    def refuse_new_requests(self) -> None:
        """From now on each token, introspection or revocation request is answered 503
        ``temporarily_unavailable`` (``SERVER_DRAINING``) on a closing connection, when the gRPC port
        starts answering UNAVAILABLE: a shutdown drains both faces alike, and callers retry elsewhere."""
        self._refusing = True

    def begin(self, request: HttpRequest) -> Answer | int:
        """The answer to send without reading a body, or the number of body bytes to read first.

        An answer to a request that may carry a body it did not read closes the connection (its unread
        bytes must not be taken for the next request)."""
        if request.method == "GET":
            build = self._documents.get(request.path)
            if build is None:
                return self.not_found()
            return Answer(HTTPStatus.OK, build(), DOCUMENT_CACHE)
        if request.method != "POST":
            return Answer(HTTPStatus.METHOD_NOT_ALLOWED, headers=ALLOW, close=True)
        if request.path not in ENDPOINT_PATHS:
            return Answer(HTTPStatus.NOT_FOUND, json_body({"error": "not_found"}), close=True)
        content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if content_type != FORM:
            return Answer(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                json_body({"error": "invalid_request", "error_description": f"the body must be {FORM}"}),
                NO_STORE,
                close=True,
            )
        length = request.headers.get("content-length") or ""
        if not length.isdigit():
            return Answer(HTTPStatus.LENGTH_REQUIRED, headers=NO_STORE, close=True)
        if int(length) > MAX_BODY_BYTES:
            return Answer(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                json_body(
                    {"error": "invalid_request", "error_description": f"at most {MAX_BODY_BYTES} bytes"}
                ),
                NO_STORE,
                close=True,
            )
        return int(length)

    def answer(self, request: HttpRequest, body: bytes) -> Answer:
        """The endpoint's answer to a POST whose body was read, within the request's deadline (the
        server calls it, and sends the answer, inside :meth:`serving`), with the audit event it
        recorded, if any: :meth:`log_access` writes that event as the request's one line."""
        held = audit.hold()
        try:
            answer = self._answer(request, body)
        finally:
            audit.release()
        return replace(answer, audit_event=held[0]) if held else answer

    def _answer(self, request: HttpRequest, body: bytes) -> Answer:
        with call_deadline(REQUEST_SECONDS):
            try:
                if self._refusing:
                    raise ServerDraining()
                if request.query:
                    raise invalid_request("query", "", "parameters go in the request body, never in the URL")
                form = parse_form(body)
                if request.path == TOKEN_PATH:
                    proofs = request.headers.get_all("dpop") or []
                    return self._endpoints.token(form, proofs, request.peer, request.certificate)
                if request.path == INTROSPECT_PATH:
                    authorization = request.headers.get("authorization")
                    return self._endpoints.introspect(form, authorization, request.peer, request.certificate)
                return self._endpoints.revoke(form, request.peer)
            except DelegationError as error:
                status, payload = oauth_error(error)
                headers: tuple[tuple[str, str], ...] = NO_STORE
                if status is HTTPStatus.UNAUTHORIZED:
                    headers = (*headers, UNAUTHORIZED)
                return Answer(status, payload, headers, error.reason.identifier, close=self._refusing)
            except Exception:
                log.exception("unexpected failure in %s", request.path)
                failure = json_body({"error": "server_error"})
                return Answer(HTTPStatus.INTERNAL_SERVER_ERROR, failure, NO_STORE, "INTERNAL")

    @staticmethod
    def body_timeout() -> Answer:
        """The answer when the body did not arrive in time (the connection closes)."""
        return Answer(HTTPStatus.REQUEST_TIMEOUT, headers=NO_STORE, close=True)

    @staticmethod
    def not_found() -> Answer:
        """No such document or endpoint."""
        return Answer(HTTPStatus.NOT_FOUND, json_body({"error": "not_found"}))

    @staticmethod
    def response_headers(answer: Answer) -> list[tuple[str, str]]:
        """The headers every answer is sent with (the server adds ``Content-Length`` and ``Date``)."""
        headers = [("Content-Type", "application/json"), *answer.headers]
        if answer.close:
            headers.append(("Connection", "close"))
        return headers

    @staticmethod
    def log_access(request: HttpRequest, answer: Answer, started: float) -> None:
        """The one line of a request (``started``: ``time.monotonic()`` when its head arrived): its
        access line or, when it recorded an audit event, that event with the access fields after its
        own, on the audit logger, as a gRPC call's (:mod:`delegation_service.transport.metrics`)."""
        if not log.isEnabledFor(logging.INFO):
            if answer.audit_event is not None:
                audit.write_held(answer.audit_event, {})
            return
        fields: dict[str, object] = {
            "event": "http",
            "method": request.method,
            "path": request.path,
            "status": int(answer.status),
            "duration_ms": round((time.monotonic() - started) * 1000, 2),
            "reason": answer.reason,
            "peer": request.peer_host,
        }
        if answer.audit_event is not None:
            audit.write_held(answer.audit_event, fields)
            return
        emit(log, logging.INFO, "http %s %s %d", (request.method, request.path, answer.status), fields)

    @property
    def in_flight(self) -> int:
        """Requests being answered now."""
        return self._in_flight

    def wait_idle(self, seconds: float) -> bool:
        """Wait until no request is being answered (idle keep-alive connections do not count)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout=seconds)

    @contextmanager
    def serving(self) -> Iterator[None]:
        """One request being answered, from its body read to its answer written: a stop waits for it."""
        with self._idle:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()


def public_base_url(settings: OAuthSettings, host: str, port: int, tls: bool) -> str:
    """The base URL of the endpoints: ``oauth.public_url``, else the address the port listens on."""
    shown = f"[{host}]" if ":" in host else host
    scheme = "https" if tls else "http"
    return (settings.public_url or f"{scheme}://{shown}:{port}").rstrip("/")


def oauth_http(
    base_url: str,
    service: DelegationService,
    gate: AccessGate,
    dpop: DpopVerifier | None,
    *,
    metadata: Callable[[str], Mapping[str, object]],
    audit: AuditSink,
    certificate_bound: bool,
) -> tuple[OAuthHttp, dict[str, object]]:
    """The rules of a port served at ``base_url``, and the RFC 8414 members naming its endpoints."""
    members = oauth_metadata(base_url, certificate_bound)
    # Built per request: our signing keys may rotate while serving (issuer.key_directory).
    documents = {
        METADATA_PATH: lambda: json_body({**metadata(base_url), **members}),
        JWKS_PATH: lambda: json.dumps(service.jwks(), separators=(",", ":"), sort_keys=True).encode(),
    }
    return OAuthHttp(OAuthEndpoints(service, gate, dpop, base_url, audit), documents), members
