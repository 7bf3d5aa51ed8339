"""The OAuth face over HTTP: RFC 8693 token exchange, RFC 7662 introspection, RFC 7009 revocation.

Callers that have no gRPC stubs (an OAuth client library, a gateway plugin) speak these. Each endpoint
translates a form into the same use case the gRPC servicer calls (:mod:`delegation_service.service`)
and its answer or refusal into JSON; no rule lives here. Refusals go through the one table beside the
gRPC one (:data:`~delegation_service.transport.errors.OAUTH_ERROR_BY_REASON`), with our reason
identifier as an extra member and the same size and redaction rules.

It listens on a port of its own (``oauth.listen``), not on the admin port: a gateway or a partner
network must reach the token endpoint without reaching ``/metrics`` and the probes, and the two are
exposed, rate-limited and TLS-terminated differently.

- ``POST /oauth2/token``: ``grant_type=urn:ietf:params:oauth:grant-type:token-exchange``,
  ``subject_token`` (the parent) and ``subject_token_type``, ``audience`` (the target client), optional
  ``scope``, ``resource`` (RFC 8707: the one resource server the child is for), ``requested_token_type``
  and ``dpop_jkt`` (RFC 9449: bind the child to the subsystem's key); a ``DPoP`` header proves the
  caller's key (RFC 9449 §5).
- ``POST /oauth2/introspect``: authenticated callers only (as on gRPC: the introspection or operator
  role, by ``Authorization: Bearer``).
- ``POST /oauth2/revoke``: the holder revokes its token; always 200 (RFC 7009 §2.2).
- ``GET /.well-known/oauth-authorization-server`` and ``/.well-known/jwks.json``.

Bodies are ``application/x-www-form-urlencoded`` UTF-8, at most :data:`MAX_BODY_BYTES`; a parameter
given twice, or any parameter in the query string (tokens never travel in URLs, which end up in logs),
is ``invalid_request``. Nothing of a request body is logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

from delegation_service.adapters.dpop import DpopVerifier
from delegation_service.adapters.keys import ASYMMETRIC_ALGORITHMS
from delegation_service.deadlines import call_deadline, remaining
from delegation_service.domain.access import Operation
from delegation_service.domain.binding import PossessionProof
from delegation_service.domain.errors import (
    DelegationError,
    InvalidDpopProof,
    InvalidRequest,
    Reason,
    UnsupportedGrantType,
    Violation,
)
from delegation_service.domain.policy import DelegationRequest
from delegation_service.domain.ports import AuditSink
from delegation_service.domain.tokens import TokenKind
from delegation_service.service import DelegationService
from delegation_service.transport.authz import AccessGate
from delegation_service.transport.errors import oauth_error
from delegation_service.transport.tls import certificate_facts

log = logging.getLogger(__name__)

TOKEN_PATH = "/oauth2/token"
INTROSPECT_PATH = "/oauth2/introspect"
REVOKE_PATH = "/oauth2/revoke"
METADATA_PATH = "/.well-known/oauth-authorization-server"
JWKS_PATH = "/.well-known/jwks.json"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
TOKEN_TYPES = (ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE)
FORM = "application/x-www-form-urlencoded"
MAX_BODY_BYTES = 64 * 1024
"""The same bound as a gRPC message."""
MAX_FIELDS = 32
REQUEST_SECONDS = 5.0
"""Each request's deadline: no store wait outlasts it (:mod:`delegation_service.deadlines`)."""
IDLE_SECONDS = 10.0
"""A connection that sends nothing for this long is closed (slow clients cannot hold a thread)."""
MAX_CONNECTIONS = 64
"""Connections served at once; past it a new one gets 503 at once instead of a thread."""
NO_STORE = (("Cache-Control", "no-store"), ("Pragma", "no-cache"))

Certificate = tuple[tuple[str, ...], str | None]
"""The verified client certificate of the connection: its names and its ``x5t#S256`` thumbprint."""
NO_CERTIFICATE: Certificate = ((), None)


@dataclass(frozen=True)
class OAuthSettings:
    """Where the OAuth face listens, and the URL callers reach it at."""

    listen: str
    public_url: str = ""
    """Base URL of the endpoints (metadata, DPoP ``htu``); empty: ``http://<listen>``."""
    max_connections: int = MAX_CONNECTIONS
    reuse_port: bool = False
    """Share the port with the other ``serve --workers`` processes (SO_REUSEPORT), as gRPC does."""


def oauth_metadata(base_url: str, certificate_bound: bool = False) -> dict[str, object]:
    """The RFC 8414 members naming the OAuth endpoints served at ``base_url``.

    Token exchange and revocation need no client authentication (the presented token is the credential,
    as on gRPC), hence ``none``; introspection takes ``Authorization: Bearer`` (an introspection JWT or
    an operator secret), for which RFC 8414 registers no method name, so none is listed for it. With
    client certificates (mutual TLS), a certificate-bound parent's child keeps its binding (RFC 8705).
    """
    members: dict[str, object] = {
        "token_endpoint": base_url + TOKEN_PATH,
        "introspection_endpoint": base_url + INTROSPECT_PATH,
        "revocation_endpoint": base_url + REVOKE_PATH,
        "grant_types_supported": [TOKEN_EXCHANGE],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "dpop_signing_alg_values_supported": sorted(ASYMMETRIC_ALGORITHMS),
    }
    if certificate_bound:
        members["tls_client_certificate_bound_access_tokens"] = True
    return members


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: status, JSON body (or none) and extra headers."""

    status: HTTPStatus
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    reason: str = ""


class OAuthEndpoints:
    """The three endpoints as functions of a decoded request (no sockets: the handler does those)."""

    def __init__(
        self,
        service: DelegationService,
        gate: AccessGate,
        dpop: DpopVerifier | None,
        base_url: str,
        audit: AuditSink,
    ) -> None:
        self._service = service
        self._audit = audit
        self._gate = gate
        self._dpop = dpop
        self._base_url = base_url

    def token(
        self,
        form: Mapping[str, str],
        dpop_proofs: list[str],
        peer: str,
        certificate: Certificate = NO_CERTIFICATE,
    ) -> Answer:
        """RFC 8693 §2.1 token exchange; §2.2.1 answer."""
        names, thumbprint = certificate
        caller = self._gate.admit_http(Operation.DELEGATE, TOKEN_PATH, None, names, peer)
        grant_type = _required(form, "grant_type")
        if grant_type != TOKEN_EXCHANGE:
            raise UnsupportedGrantType(
                violations=[Violation("grant_type", grant_type, Reason.UNSUPPORTED_GRANT_TYPE, "unsupported")]
            )
        subject_token = _required(form, "subject_token")
        _one_of(form, "subject_token_type", TOKEN_TYPES, required=True)
        requested_type = _one_of(form, "requested_token_type", TOKEN_TYPES) or ACCESS_TOKEN_TYPE
        for unsupported in ("actor_token", "actor_token_type"):
            if unsupported in form:
                raise _invalid(unsupported, "", f"{unsupported} is not supported: the caller is the actor")
        proof = self._proof(dpop_proofs, subject_token, thumbprint)
        scope = form.get("scope")
        result = self._service.delegate(
            subject_token,
            DelegationRequest(
                client_id=_required(form, "audience"),
                scopes=() if scope is None else (scope,),
                audience=form.get("resource"),
                proof=proof,
                bind_to_jkt=form.get("dpop_jkt"),
            ),
            caller=caller,
            time_left=remaining,
        )
        child = result.child
        binding = child.confirmation
        body = {
            "access_token": result.access_token,
            "issued_token_type": requested_type,
            "token_type": binding.token_type if binding is not None else "Bearer",
            "expires_in": child.expires_at - child.issued_at,
            "scope": child.scope_claim,
        }
        return Answer(HTTPStatus.OK, _json(body), NO_STORE)

    def _proof(self, proofs: list[str], subject_token: str, certificate: str | None) -> PossessionProof:
        if not proofs:
            return PossessionProof(certificate_x5t_s256=certificate)
        try:
            if len(proofs) > 1:
                raise InvalidDpopProof("more than one DPoP header")
            if self._dpop is None:
                raise InvalidDpopProof("DPoP is not configured")
            jkt = self._dpop.verify(
                proofs[0], method="POST", url=self._base_url + TOKEN_PATH, access_token=subject_token
            )
        except InvalidDpopProof as refused:
            # Refused before the use case runs, so audited here (as the access gate audits refusals).
            self._audit.record(
                "delegate denied",
                event="delegate",
                outcome="denied",
                reason=refused.reason.identifier,
                detail=refused.detail,
            )
            raise
        return PossessionProof(dpop_jkt=jkt, certificate_x5t_s256=certificate)

    def introspect(
        self,
        form: Mapping[str, str],
        authorization: str | None,
        peer: str,
        certificate: Certificate = NO_CERTIFICATE,
    ) -> Answer:
        """RFC 7662 §2: the claims of an active token, ``{"active": false}`` otherwise."""
        self._gate.admit_http(Operation.INTROSPECT, INTROSPECT_PATH, authorization, certificate[0], peer)
        token = self._service.introspect(_required(form, "token")).token
        if token is None:
            return Answer(HTTPStatus.OK, _json({"active": False}), NO_STORE)
        body: dict[str, object] = {
            "active": True,
            "scope": " ".join(token.scopes),
            "client_id": token.client_id,
            "sub": token.subject,
            "iss": token.issuer,
            "aud": list(token.audiences) if len(token.audiences) != 1 else token.audiences[0],
            "iat": token.issued_at,
            "exp": token.expires_at,
            "jti": token.token_id,
            "token_type": token.confirmation.token_type if token.confirmation is not None else "Bearer",
            "chain_id": token.chain_id,
        }
        if token.kind is TokenKind.DELEGATED:
            body["act"] = {"sub": token.actor_client_id}
            body["parent_jti"] = token.parent_token_id
        if token.confirmation is not None:
            body["cnf"] = token.confirmation.claim()
        return Answer(HTTPStatus.OK, _json(body), NO_STORE)

    def revoke(self, form: Mapping[str, str], peer: str) -> Answer:
        """RFC 7009 §2: revoke the presented token (and, for a parent, its chain); 200 whatever it was."""
        caller = self._gate.admit_http(Operation.REVOKE_OWN_TOKEN, REVOKE_PATH, None, (), peer)
        self._service.revoke(_required(form, "token"), caller=caller)
        return Answer(HTTPStatus.OK, b"", NO_STORE)


def _json(body: Mapping[str, object]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _invalid(field: str, value: str, description: str) -> InvalidRequest:
    return InvalidRequest(violations=[Violation(field, value, Reason.INVALID_REQUEST, description)])


def _required(form: Mapping[str, str], name: str) -> str:
    value = form.get(name)
    if not value:
        raise _invalid(name, "", f"{name} is required")
    return value


def _one_of(
    form: Mapping[str, str], name: str, allowed: tuple[str, ...], *, required: bool = False
) -> str | None:
    value = form.get(name)
    if value is None and not required:
        return None
    if value not in allowed:
        raise _invalid(name, value or "", f"{name} must be one of: {', '.join(allowed)}")
    return value


def parse_form(body: bytes) -> dict[str, str]:
    """A form body as a mapping; a repeated parameter, bad encoding or too many fields is
    ``invalid_request`` (RFC 6749 §3.2: parameters must not be included more than once)."""
    try:
        text = body.decode("utf-8")
        pairs = urllib.parse.parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=bool(text),
            max_num_fields=MAX_FIELDS,
            errors="strict",
        )
    except (UnicodeDecodeError, ValueError):
        raise _invalid("body", "", f"not a UTF-8 {FORM} body of at most {MAX_FIELDS} fields") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise _invalid(name, "", "the parameter is given more than once")
        form[name] = value
    return form


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
        host, _, port = settings.listen.rpartition(":")
        host = host.strip("[]")
        handler: type[_OAuthHandler] = type("OAuthHandler", (_OAuthHandler,), {})
        try:
            self._server = _BoundedServer(
                (host or "0.0.0.0", int(port)),  # noqa: S104
                handler,
                settings.max_connections,
                settings.reuse_port,
            )
        except OSError as error:
            raise RuntimeError(
                f"cannot listen on {settings.listen} (oauth.listen): {error.strerror}"
            ) from None
        self._server.tls = tls
        self.port: int = self._server.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        scheme = "https" if tls is not None else "http"
        self.base_url = (settings.public_url or f"{scheme}://{shown}:{self.port}").rstrip("/")
        handler.endpoints = OAuthEndpoints(service, gate, dpop, self.base_url, audit)
        certificate_bound = tls is not None and tls.verify_mode is not ssl.CERT_NONE
        self.metadata_members = oauth_metadata(self.base_url, certificate_bound)
        base_url, members = self.base_url, self.metadata_members
        # Built per request: our signing keys may rotate while serving (issuer.key_directory).
        handler.documents = {
            METADATA_PATH: lambda: _json({**metadata(base_url), **members}),
            JWKS_PATH: lambda: json.dumps(service.jwks(), separators=(",", ":"), sort_keys=True).encode(),
        }
        self._thread = threading.Thread(target=self._server.serve_forever, name="oauth-http", daemon=True)

    def start(self) -> OAuthHttpServer:
        """Serve in the background."""
        self._thread.start()
        log.info("oauth http serving", extra={"event": "oauth_serving", "port": self.port})
        return self

    def stop(self, grace_seconds: float = 5.0) -> None:
        """Stop accepting, let the requests being answered finish (up to ``grace_seconds``), close."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        if not self._server.wait_idle(grace_seconds):
            log.warning("oauth http: requests still in flight at shutdown", extra={"event": "oauth_stop"})


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, up to ``max_connections``; past it a 503 at once, and no thread."""

    daemon_threads = True
    tls: ssl.SSLContext | None = None
    """TLS, handshaken on the connection's own thread (a slow handshake never holds the accept loop)."""

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], slots: int, reuse_port: bool
    ) -> None:
        self._slots = threading.BoundedSemaphore(slots)
        self.allow_reuse_port = reuse_port
        self.in_flight = 0
        self.idle = threading.Condition()
        super().__init__(address, handler)

    def wait_idle(self, seconds: float) -> bool:
        """Wait until no request is being answered (idle keep-alive connections do not count)."""
        with self.idle:
            return self.idle.wait_for(lambda: self.in_flight == 0, timeout=seconds)

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
        try:
            if self.tls is not None:
                request.settimeout(IDLE_SECONDS)
                try:
                    request = self.tls.wrap_socket(request, server_side=True)
                except (OSError, ssl.SSLError):
                    self.shutdown_request(request)
                    return
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _OAuthHandler(BaseHTTPRequestHandler):
    """POST on the three endpoints, GET on the two documents; anything else 404 or 405."""

    endpoints: ClassVar[OAuthEndpoints]
    documents: ClassVar[dict[str, Callable[[], bytes]]]
    protocol_version = "HTTP/1.1"
    server_version = "delegation-service"
    sys_version = ""
    timeout = IDLE_SECONDS
    # Headers and body leave in two writes: without TCP_NODELAY the second waits for the client's
    # delayed ACK on a keep-alive connection (measured: 48 ms per token exchange instead of ~2).
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        """The metadata and the JWKS."""
        started = time.monotonic()
        build = self.documents.get(self.path.split("?", 1)[0])
        if build is None:
            self._finish(started, self._not_found())
        else:
            document = build()
            self._finish(
                started, Answer(HTTPStatus.OK, document, (("Cache-Control", "public, max-age=300"),))
            )

    def do_POST(self) -> None:
        """One of the three endpoints."""
        started = time.monotonic()
        path, _, query = self.path.partition("?")
        if path not in (TOKEN_PATH, INTROSPECT_PATH, REVOKE_PATH):
            self._finish(started, self._not_found())
            return
        body = self._read_body()
        if isinstance(body, Answer):
            self._finish(started, body)
            return
        server = self.server
        assert isinstance(server, _BoundedServer)
        with server.idle:
            server.in_flight += 1
        try:
            with call_deadline(REQUEST_SECONDS):
                answer = self._answer(path, query, body)
            self._finish(started, answer)
        finally:
            with server.idle:
                server.in_flight -= 1
                server.idle.notify_all()

    def do_PUT(self) -> None:
        """Nothing here is put."""
        self._finish(
            time.monotonic(), Answer(HTTPStatus.METHOD_NOT_ALLOWED, headers=(("Allow", "GET, POST"),))
        )

    def do_DELETE(self) -> None:
        """Nothing here is deleted."""
        self.do_PUT()

    def do_PATCH(self) -> None:
        """Nothing here is patched."""
        self.do_PUT()

    def _answer(self, path: str, query: str, body: bytes) -> Answer:
        peer = "ipv4:{}:{}".format(*self.client_address[:2])
        try:
            if query:
                raise _invalid("query", "", "parameters go in the request body, never in the URL")
            form = parse_form(body)
            certificate = certificate_facts(self.connection)
            if path == TOKEN_PATH:
                return self.endpoints.token(form, self.headers.get_all("DPoP") or [], peer, certificate)
            if path == INTROSPECT_PATH:
                return self.endpoints.introspect(form, self.headers.get("Authorization"), peer, certificate)
            return self.endpoints.revoke(form, peer)
        except DelegationError as error:
            status, payload = oauth_error(error)
            headers: tuple[tuple[str, str], ...] = NO_STORE
            if status is HTTPStatus.UNAUTHORIZED:
                headers = (*headers, ("WWW-Authenticate", 'Bearer realm="delegation-service"'))
            return Answer(status, payload, headers, error.reason.identifier)
        except Exception:
            log.exception("unexpected failure in %s", path)
            return Answer(
                HTTPStatus.INTERNAL_SERVER_ERROR, _json({"error": "server_error"}), NO_STORE, "INTERNAL"
            )

    def _read_body(self) -> bytes | Answer:
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != FORM:
            return Answer(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                _json({"error": "invalid_request", "error_description": f"the body must be {FORM}"}),
                NO_STORE,
            )
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():
            self.close_connection = True
            return Answer(HTTPStatus.LENGTH_REQUIRED, headers=NO_STORE)
        if int(length) > MAX_BODY_BYTES:
            self.close_connection = True
            return Answer(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                _json({"error": "invalid_request", "error_description": f"at most {MAX_BODY_BYTES} bytes"}),
                NO_STORE,
            )
        try:
            return self.rfile.read(int(length))
        except (TimeoutError, OSError):
            self.close_connection = True
            return Answer(HTTPStatus.REQUEST_TIMEOUT, headers=NO_STORE)

    @staticmethod
    def _not_found() -> Answer:
        return Answer(HTTPStatus.NOT_FOUND, _json({"error": "not_found"}))

    def _finish(self, started: float, answer: Answer) -> None:
        self.send_response(answer.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer.body)))
        for name, value in answer.headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if answer.body:
            self.wfile.write(answer.body)
        log.info(
            "http %s %s %d",
            self.command,
            self.path.split("?", 1)[0],
            answer.status,
            extra={
                "event": "http",
                "method": self.command,
                "path": self.path.split("?", 1)[0],
                "status": int(answer.status),
                "duration_ms": round((time.monotonic() - started) * 1000, 2),
                "reason": answer.reason,
                "peer": self.client_address[0],
            },
        )

    def log_message(self, format: str, *args: object) -> None:
        """The standard library's request line goes to DEBUG; the access line above is the record."""
        log.debug("oauth http " + format, *args)
