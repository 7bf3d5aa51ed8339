"""The one table that maps domain reasons to gRPC status codes, and the rich status it builds (AIP-193).

Every error leaves the service as a status with a ``google.rpc.ErrorInfo`` (reason in UPPER_SNAKE_CASE,
domain :data:`ERROR_DOMAIN`, metadata naming the scope) and, when specific fields or scopes failed, a
``google.rpc.BadRequest`` with one field violation each.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from delegation_service.domain.errors import DelegationError, Reason

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
    # Refusals.
    Reason.SCOPE_WAS_NOT_GRANTED_IN_PARENT: grpc.StatusCode.PERMISSION_DENIED,
    Reason.UNAVAILABLE_SCOPE_FOR_BEARER_TYPE: grpc.StatusCode.PERMISSION_DENIED,
    Reason.DELEGATION_ACCESS_TOKEN_CANNOT_DELEGATE: grpc.StatusCode.PERMISSION_DENIED,
    Reason.EXPIRES_AFTER_PARENT: grpc.StatusCode.PERMISSION_DENIED,
    Reason.SCOPE_NOT_ALLOWED_FOR_CLIENT: grpc.StatusCode.PERMISSION_DENIED,
    Reason.MISSING_DELEGATION_SCOPE: grpc.StatusCode.PERMISSION_DENIED,
    Reason.NO_GRANTABLE_SCOPES: grpc.StatusCode.PERMISSION_DENIED,
    # Who is asking.
    Reason.INVALID_PARENT_TOKEN: grpc.StatusCode.UNAUTHENTICATED,
    Reason.OPERATOR_CREDENTIALS_REQUIRED: grpc.StatusCode.UNAUTHENTICATED,
    Reason.CALLER_CREDENTIALS_REQUIRED: grpc.StatusCode.UNAUTHENTICATED,
    Reason.OPERATOR_ROLE_REQUIRED: grpc.StatusCode.PERMISSION_DENIED,
    Reason.CALLER_NOT_AUTHORIZED: grpc.StatusCode.PERMISSION_DENIED,
    # Everything else.
    Reason.CHAIN_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Reason.STORE_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Reason.DEADLINE_TOO_SHORT: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def status_for(error: DelegationError) -> grpc.Status:
    """The rich gRPC status for a domain error."""
    code = STATUS_BY_REASON[error.reason]
    metadata = {}
    scopes = [v.value for v in error.violations if v.field.startswith("scopes")]
    if scopes:
        metadata["scope"] = scopes[0]
        metadata["scopes"] = " ".join(scopes)
    info = error_details_pb2.ErrorInfo(reason=error.reason.identifier, domain=ERROR_DOMAIN, metadata=metadata)
    details = [_pack(info)]
    if error.violations:
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field,
                            reason=v.reason.identifier,
                            description=f"{v.value!r}: {v.description}" if v.value else v.description,
                        )
                        for v in error.violations
                    ]
                )
            )
        )
    return rpc_status.to_status(
        status_pb2.Status(code=_CODE_NUMBERS[code], message=error.message, details=details)
    )


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
