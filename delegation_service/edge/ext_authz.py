"""Envoy's external authorization API (``envoy.service.auth.v3.Authorization/Check``) over the verifier.

Translation only: the ``CheckRequest``'s HTTP attributes in, the verifier's :class:`Decision` out, as an
OK with identity headers for the upstream, or a denial with the HTTP status and ``WWW-Authenticate``.
"""

from __future__ import annotations

import urllib.parse

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from delegation_service.domain import binding
from delegation_service.edge.verifier import IDENTITY_HEADERS, Decision, EdgeVerifier, Outcome, RequestFacts

_RPC_CODES = {
    Outcome.ALLOW: code_pb2.OK,
    Outcome.UNAUTHENTICATED: code_pb2.UNAUTHENTICATED,
    Outcome.FORBIDDEN: code_pb2.PERMISSION_DENIED,
    Outcome.UNAVAILABLE: code_pb2.UNAVAILABLE,
}
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


class AuthorizationServicer(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    """``Check`` for Envoy's ``ext_authz`` filter (gRPC)."""

    def __init__(self, verifier: EdgeVerifier) -> None:
        self._verifier = verifier

    def Check(  # noqa: N802 (the RPC's name, as the generated base class declares it)
        self, request: external_auth_pb2.CheckRequest, context: grpc.ServicerContext
    ) -> external_auth_pb2.CheckResponse:
        """Allow or deny one HTTP request as Envoy describes it."""
        http = request.attributes.request.http
        # Envoy lower-cases header names in CheckRequest (HTTP/2 style); read both to be safe.
        authorization = http.headers.get("authorization") or http.headers.get("Authorization")
        path = http.path.partition("?")[0] or "/"
        proof = http.headers.get("dpop")
        facts = RequestFacts(
            method=http.method or "GET",
            url=f"{http.scheme or 'https'}://{http.host}{path}" if http.host else None,
            dpop_proofs=(proof,) if proof else (),
            certificate_x5t_s256=certificate_thumbprint(request.attributes.source.certificate),
        )
        return check_response(self._verifier.check(authorization, path, facts))


def certificate_thumbprint(pem: str) -> str | None:
    """RFC 8705 ``x5t#S256`` of the client certificate Envoy passes (URL-encoded PEM), if any."""
    if not pem:
        return None
    try:
        certificate = x509.load_pem_x509_certificate(urllib.parse.unquote(pem).encode())
    except ValueError:
        return None
    return binding.certificate_thumbprint(certificate.public_bytes(serialization.Encoding.DER))


def check_response(decision: Decision) -> external_auth_pb2.CheckResponse:
    """The ``CheckResponse`` for a decision."""
    headers = [
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=key, value=value), append_action=_OVERWRITE
        )
        for key, value in decision.headers
    ]
    status = status_pb2.Status(code=_RPC_CODES[decision.outcome])
    if decision.allowed:
        return external_auth_pb2.CheckResponse(
            status=status, ok_response=external_auth_pb2.OkHttpResponse(headers=headers)
        )
    return external_auth_pb2.CheckResponse(
        status=status,
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=decision.outcome.value),
            headers=headers,
        ),
    )


def add_to_server(server: grpc.Server, verifier: EdgeVerifier) -> None:
    """Serve ``Check`` on ``server``."""
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(AuthorizationServicer(verifier), server)


__all__ = ["IDENTITY_HEADERS", "AuthorizationServicer", "add_to_server", "check_response"]
