"""The one table that maps domain reasons to gRPC status codes, and the rich status it builds (AIP-193).

Every error leaves the service as a status with a ``google.rpc.ErrorInfo`` (reason in UPPER_SNAKE_CASE,
domain :data:`ERROR_DOMAIN`, metadata naming the scope) and, when specific fields or scopes failed, a
``google.rpc.BadRequest`` with one field violation each.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from http import HTTPStatus

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from delegation_service.domain.errors import DelegationError, Reason, Violation

ERROR_DOMAIN = "delegation-service"

STATUS_BY_REASON: dict[Reason, grpc.StatusCode] = {
    # Malformed input.
    Reason.INVALID_SCOPE_STRUCTURE: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.INVALID_AUDIENCE: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.INVALID_SCOPE_NAME: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.DIFFERENT_BEARER_TYPES: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.UNKNOWN_CLIENT: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.INVALID_LIFETIME: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.SCOPES_REQUIRED: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.TOO_MANY_SCOPES: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.INVALID_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.MALFORMED_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.SCOPE_OUTSIDE_AUDIENCE: grpc.StatusCode.INVALID_ARGUMENT,
    Reason.UNSUPPORTED_GRANT_TYPE: grpc.StatusCode.INVALID_ARGUMENT,
    # Refusals.
    Reason.SCOPE_WAS_NOT_GRANTED_IN_PARENT: grpc.StatusCode.PERMISSION_DENIED,
    Reason.UNAVAILABLE_SCOPE_FOR_BEARER_TYPE: grpc.StatusCode.PERMISSION_DENIED,
    Reason.DELEGATION_ACCESS_TOKEN_CANNOT_DELEGATE: grpc.StatusCode.PERMISSION_DENIED,
    Reason.EXPIRES_AFTER_PARENT: grpc.StatusCode.PERMISSION_DENIED,
    Reason.SCOPE_NOT_ALLOWED_FOR_CLIENT: grpc.StatusCode.PERMISSION_DENIED,
    Reason.MISSING_DELEGATION_SCOPE: grpc.StatusCode.PERMISSION_DENIED,
    Reason.PARENT_WITHOUT_CLIENT: grpc.StatusCode.PERMISSION_DENIED,
    Reason.NO_GRANTABLE_SCOPES: grpc.StatusCode.PERMISSION_DENIED,
    Reason.AUDIENCE_NOT_GRANTED: grpc.StatusCode.PERMISSION_DENIED,
    # Who is asking.
    Reason.INVALID_PARENT_TOKEN: grpc.StatusCode.UNAUTHENTICATED,
    Reason.OPERATOR_CREDENTIALS_REQUIRED: grpc.StatusCode.UNAUTHENTICATED,
    Reason.CALLER_CREDENTIALS_REQUIRED: grpc.StatusCode.UNAUTHENTICATED,
    Reason.OPERATOR_ROLE_REQUIRED: grpc.StatusCode.PERMISSION_DENIED,
    Reason.CALLER_NOT_AUTHORIZED: grpc.StatusCode.PERMISSION_DENIED,
    Reason.INVALID_DPOP_PROOF: grpc.StatusCode.UNAUTHENTICATED,
    Reason.PROOF_OF_POSSESSION_REQUIRED: grpc.StatusCode.UNAUTHENTICATED,
    # Everything else.
    Reason.CHAIN_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Reason.STORE_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Reason.CURSOR_EXPIRED: grpc.StatusCode.OUT_OF_RANGE,
    Reason.TOO_MANY_STREAMS: grpc.StatusCode.RESOURCE_EXHAUSTED,
    # Resumable: a stream ended by shutdown resumes from its last cursor, a refused call is retried.
    Reason.SERVER_DRAINING: grpc.StatusCode.UNAVAILABLE,
    Reason.DEADLINE_TOO_SHORT: grpc.StatusCode.DEADLINE_EXCEEDED,
}


OAUTH_ERROR_BY_REASON: dict[Reason, tuple[HTTPStatus, str]] = {
    # The OAuth face (RFC 6749 §5.2, RFC 8693 §2.2.2, RFC 9449 §5): HTTP status and ``error`` code for
    # each reason, beside the gRPC table so that both faces answer every refusal. Malformed requests.
    Reason.INVALID_REQUEST: (HTTPStatus.BAD_REQUEST, "invalid_request"),
    Reason.MALFORMED_REQUEST: (HTTPStatus.BAD_REQUEST, "invalid_request"),
    Reason.INVALID_LIFETIME: (HTTPStatus.BAD_REQUEST, "invalid_request"),
    Reason.UNSUPPORTED_GRANT_TYPE: (HTTPStatus.BAD_REQUEST, "unsupported_grant_type"),
    # The scopes asked for.
    Reason.INVALID_SCOPE_STRUCTURE: (HTTPStatus.BAD_REQUEST, "invalid_scope"),
    Reason.INVALID_AUDIENCE: (HTTPStatus.BAD_REQUEST, "invalid_scope"),
    Reason.INVALID_SCOPE_NAME: (HTTPStatus.BAD_REQUEST, "invalid_scope"),
    Reason.DIFFERENT_BEARER_TYPES: (HTTPStatus.BAD_REQUEST, "invalid_scope"),
    Reason.SCOPES_REQUIRED: (HTTPStatus.BAD_REQUEST, "invalid_scope"),
    Reason.TOO_MANY_SCOPES: (HTTPStatus.BAD_REQUEST, "invalid_scope"),
    Reason.SCOPE_WAS_NOT_GRANTED_IN_PARENT: (HTTPStatus.BAD_REQUEST, "invalid_scope"),
    Reason.UNAVAILABLE_SCOPE_FOR_BEARER_TYPE: (HTTPStatus.BAD_REQUEST, "invalid_scope"),
    Reason.SCOPE_NOT_ALLOWED_FOR_CLIENT: (HTTPStatus.BAD_REQUEST, "invalid_scope"),
    Reason.SCOPE_OUTSIDE_AUDIENCE: (HTTPStatus.BAD_REQUEST, "invalid_scope"),
    Reason.NO_GRANTABLE_SCOPES: (HTTPStatus.BAD_REQUEST, "invalid_scope"),
    # The target: the subsystem (``audience``) and the resource server (``resource``).
    Reason.UNKNOWN_CLIENT: (HTTPStatus.BAD_REQUEST, "invalid_target"),
    Reason.AUDIENCE_NOT_GRANTED: (HTTPStatus.BAD_REQUEST, "invalid_target"),
    # The subject token (the parent) and the proof of its key.
    Reason.INVALID_PARENT_TOKEN: (HTTPStatus.BAD_REQUEST, "invalid_grant"),
    Reason.DELEGATION_ACCESS_TOKEN_CANNOT_DELEGATE: (HTTPStatus.BAD_REQUEST, "invalid_grant"),
    Reason.MISSING_DELEGATION_SCOPE: (HTTPStatus.BAD_REQUEST, "invalid_grant"),
    Reason.PARENT_WITHOUT_CLIENT: (HTTPStatus.BAD_REQUEST, "invalid_grant"),
    Reason.EXPIRES_AFTER_PARENT: (HTTPStatus.BAD_REQUEST, "invalid_grant"),
    Reason.PROOF_OF_POSSESSION_REQUIRED: (HTTPStatus.BAD_REQUEST, "invalid_grant"),
    Reason.INVALID_DPOP_PROOF: (HTTPStatus.BAD_REQUEST, "invalid_dpop_proof"),
    # Who is asking (introspection).
    Reason.CALLER_CREDENTIALS_REQUIRED: (HTTPStatus.UNAUTHORIZED, "invalid_client"),
    Reason.OPERATOR_CREDENTIALS_REQUIRED: (HTTPStatus.UNAUTHORIZED, "invalid_client"),
    Reason.CALLER_NOT_AUTHORIZED: (HTTPStatus.FORBIDDEN, "unauthorized_client"),
    Reason.OPERATOR_ROLE_REQUIRED: (HTTPStatus.FORBIDDEN, "unauthorized_client"),
    # The service cannot answer now: retry (RFC 7009 §2.2.1 uses 503 too).
    Reason.STORE_UNAVAILABLE: (HTTPStatus.SERVICE_UNAVAILABLE, "temporarily_unavailable"),
    Reason.SERVER_DRAINING: (HTTPStatus.SERVICE_UNAVAILABLE, "temporarily_unavailable"),
    Reason.DEADLINE_TOO_SHORT: (HTTPStatus.SERVICE_UNAVAILABLE, "temporarily_unavailable"),
    Reason.TOO_MANY_STREAMS: (HTTPStatus.SERVICE_UNAVAILABLE, "temporarily_unavailable"),
    # Not reachable over HTTP (operator and stream calls), mapped so that no reason is left out.
    Reason.CHAIN_NOT_FOUND: (HTTPStatus.BAD_REQUEST, "invalid_request"),
    Reason.CURSOR_EXPIRED: (HTTPStatus.BAD_REQUEST, "invalid_request"),
}
"""A refusal whose violations are scopes is ``invalid_scope`` whatever its reason (the delegation scope
asked for a child shares its reason with a delegated parent, which is ``invalid_grant``)."""


MAX_STATUS_BYTES = 3 * 1024
"""Budget of the serialised ``google.rpc.Status``. It travels base64-encoded in the
``grpc-status-details-bin`` trailer (4/3 larger), so the whole status stays under 4 KiB, well inside
clients' default 8-16 KiB metadata limits (SPEC §6); past them a client sees RESOURCE_EXHAUSTED instead
of the real error."""
MAX_ECHO_CHARS = 128
"""Longest request value repeated back in an error (SPEC §6)."""
MAX_VIOLATIONS = 20
"""Field violations listed at most; the rest are counted in ``ErrorInfo.metadata['omitted_violations']``."""

# A value that looks like a credential is never repeated: a compact JWS (three base64url segments,
# JSON objects start "eyJ"), or a long run mixing upper case, lower case and digits (a pasted secret;
# scope names are lower case, and a URL scope's words rarely mix all three in 20 characters).
# Found with non-overlapping runs only (finditer over a possessive class), so the scan is linear in the
# value's length: a backtracking pattern took seconds on one 60 KB scope.
_DOTTED_RUN = re.compile(r"[A-Za-z0-9_.-]+")
_BASE64_RUN = re.compile(r"[A-Za-z0-9_+/=-]{20,}")


def echo(value: str) -> str:
    """``value`` as an error may repeat it: cut to :data:`MAX_ECHO_CHARS`, never a token-shaped value."""
    if _jws_shaped(value) or any(_looks_secret(run.group()) for run in _BASE64_RUN.finditer(value)):
        return f"<redacted: {len(value)} characters>"
    if len(value) > MAX_ECHO_CHARS:
        return value[: MAX_ECHO_CHARS - 1] + "\u2026"
    return value


def _jws_shaped(value: str) -> bool:
    """Whether ``value`` holds a compact JWS: a segment starting ``eyJ`` (a base64url JSON object) with
    another after it, or three dot-separated base64url segments of eight characters or more."""
    for run in _DOTTED_RUN.finditer(value):
        parts = run.group().split(".")
        if any(part.startswith("eyJ") for part in parts[:-1]):
            return True
        long_in_a_row = 0
        for part in parts:
            long_in_a_row = long_in_a_row + 1 if len(part) >= 8 else 0
            if long_in_a_row == 3:
                return True
    return False


def _looks_secret(run: str) -> bool:
    return any(c.isupper() for c in run) and any(c.islower() for c in run) and any(c.isdigit() for c in run)


def status_for(error: DelegationError) -> grpc.Status:
    """The rich gRPC status for a domain error, bounded in size whatever the request held (SPEC §6)."""
    # Each value is cut (or redacted) once; rounds below only drop whole violations.
    violations = [replace(v, value=echo(v.value)) for v in error.violations[:MAX_VIOLATIONS]]
    while True:
        status = _rich_status(error, violations, omitted=len(error.violations) - len(violations))
        if status.ByteSize() <= MAX_STATUS_BYTES or not violations:
            return rpc_status.to_status(status)
        violations.pop()  # values are already cut short, so this ends within a few rounds


def _rich_status(error: DelegationError, violations: list[Violation], omitted: int) -> status_pb2.Status:
    metadata = {}
    scopes = [v.value for v in violations if v.field.startswith("scopes")]
    if scopes:
        metadata["scope"] = scopes[0]
        metadata["scopes"] = " ".join(scopes)
    if omitted:
        metadata["omitted_violations"] = str(omitted)
    info = error_details_pb2.ErrorInfo(reason=error.reason.identifier, domain=ERROR_DOMAIN, metadata=metadata)
    details = [_pack(info)]
    if violations:
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field,
                            reason=v.reason.identifier,
                            description=f"{v.value!r}: {v.description}" if v.value else v.description,
                        )
                        for v in violations
                    ]
                )
            )
        )
    return status_pb2.Status(
        code=_CODE_NUMBERS[STATUS_BY_REASON[error.reason]], message=error.message, details=details
    )


def oauth_error(error: DelegationError) -> tuple[HTTPStatus, bytes]:
    """The RFC 6749 §5.2 error response for a domain error: ``error``, ``error_description`` (the fixed
    message), our ``reason`` identifier and the ``violations`` (field, reason, value cut or redacted as
    on gRPC), within :data:`MAX_STATUS_BYTES` whatever the request held (SPEC §6)."""
    status, code = OAUTH_ERROR_BY_REASON[error.reason]
    if any(v.field.startswith("scopes") for v in error.violations):
        status, code = HTTPStatus.BAD_REQUEST, "invalid_scope"
    violations = [
        {
            "field": v.field,
            "reason": v.reason.identifier,
            "value": echo(v.value),
            "description": v.description,
        }
        for v in error.violations[:MAX_VIOLATIONS]
    ]
    while True:
        body: dict[str, object] = {
            "error": code,
            "error_description": error.message,
            "reason": error.reason.identifier,
        }
        if violations:
            body["violations"] = violations
        omitted = len(error.violations) - len(violations)
        if omitted:
            body["omitted_violations"] = omitted
        encoded = json.dumps(body, separators=(",", ":")).encode()
        if len(encoded) <= MAX_STATUS_BYTES or not violations:
            return status, encoded
        violations.pop()


def internal_status() -> grpc.Status:
    """The status for an unexpected failure: no detail (the log has it), never a traceback."""
    info = error_details_pb2.ErrorInfo(reason="INTERNAL_ERROR", domain=ERROR_DOMAIN)
    return rpc_status.to_status(
        status_pb2.Status(code=code_pb2.INTERNAL, message="internal error", details=[_pack(info)])
    )


def _pack(message: error_details_pb2.ErrorInfo | error_details_pb2.BadRequest) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


_CODE_NUMBERS: dict[grpc.StatusCode, int] = {code: code.value[0] for code in grpc.StatusCode}
