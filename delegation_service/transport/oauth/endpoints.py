"""The OAuth endpoints over HTTP: RFC 8693 token exchange, RFC 7662 introspection, RFC 7009 revocation.

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

This module holds the endpoints as functions of a decoded form; the HTTP rules around them (routing,
limits, the error mapping, the deadline, the access line) are :mod:`.protocol`, shared by the two
servers that can carry them: :mod:`.threads` (the standard library's) and :mod:`.granian_server`.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus

from delegation_service.adapters.dpop import DpopVerifier
from delegation_service.adapters.keys import ASYMMETRIC_ALGORITHMS
from delegation_service.audit import HeldEvent
from delegation_service.deadlines import remaining
from delegation_service.domain.access import Operation
from delegation_service.domain.binding import PossessionProof
from delegation_service.domain.errors import (
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
    idle_seconds: float = IDLE_SECONDS
    """How long a connection may stay silent (before its next request, or within a body)."""


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
    close: bool = False
    """Close the connection after this answer (the rest of the request was not read)."""
    audit_event: HeldEvent | None = None
    """The audit event the request recorded, written with the access fields as its one log line."""


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
                raise invalid_request(
                    unsupported, "", f"{unsupported} is not supported: the caller is the actor"
                )
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
        return Answer(HTTPStatus.OK, json_body(body), NO_STORE)

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
            return Answer(HTTPStatus.OK, json_body({"active": False}), NO_STORE)
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
        return Answer(HTTPStatus.OK, json_body(body), NO_STORE)

    def revoke(self, form: Mapping[str, str], peer: str) -> Answer:
        """RFC 7009 §2: revoke the presented token (and, for a parent, its chain); 200 whatever it was."""
        caller = self._gate.admit_http(Operation.REVOKE_OWN_TOKEN, REVOKE_PATH, None, (), peer)
        self._service.revoke(_required(form, "token"), caller=caller)
        return Answer(HTTPStatus.OK, b"", NO_STORE)


def json_body(body: Mapping[str, object]) -> bytes:
    """Compact JSON, as every answer is sent."""
    return json.dumps(body, separators=(",", ":")).encode()


def invalid_request(field: str, value: str, description: str) -> InvalidRequest:
    """``invalid_request`` naming ``field``."""
    return InvalidRequest(violations=[Violation(field, value, Reason.INVALID_REQUEST, description)])


def _required(form: Mapping[str, str], name: str) -> str:
    value = form.get(name)
    if not value:
        raise invalid_request(name, "", f"{name} is required")
    return value


def _one_of(
    form: Mapping[str, str], name: str, allowed: tuple[str, ...], *, required: bool = False
) -> str | None:
    value = form.get(name)
    if value is None and not required:
        return None
    if value not in allowed:
        raise invalid_request(name, value or "", f"{name} must be one of: {', '.join(allowed)}")
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
        raise invalid_request("body", "", f"not a UTF-8 {FORM} body of at most {MAX_FIELDS} fields") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise invalid_request(name, "", "the parameter is given more than once")
        form[name] = value
    return form
