"""A small client for the service: connect with a deadline, call, and decode error details.

Subsystems can use the generated stubs directly; this adds the two things everyone writes by hand:
per-call deadlines and reading ``ErrorInfo``/``BadRequest`` out of a failed call.

This file is the helper's one source. The service's CLI and tests use it from here; the
``delegation-client`` distribution (``clients/python``) is built with a copy of it as
``delegation_client._client``, its ``delegation.v1`` imports pointed at the stubs that distribution
generates for itself (``delegation_client.v1``). The two distributions then install no file in common:
either can be uninstalled without breaking the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from delegation.v1 import admin_pb2, admin_pb2_grpc, delegation_pb2, delegation_pb2_grpc


@dataclass(frozen=True)
class ErrorDetails:
    """What a failed call says: status code, message, ErrorInfo reason and metadata, field violations."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    violations: tuple[tuple[str, str, str], ...] = ()  # (field, reason, description)


def error_details(error: grpc.RpcError) -> ErrorDetails:
    """Decode the rich status of a failed call (works for any gRPC error, rich or not)."""
    call = error if isinstance(error, grpc.Call) else None
    code = call.code() if call is not None else grpc.StatusCode.UNKNOWN
    message = (call.details() if call is not None else "") or ""
    status = rpc_status.from_call(call) if call is not None else None
    reason, domain = "", ""
    metadata: dict[str, str] = {}
    violations: list[tuple[str, str, str]] = []
    details: list[Any] = list(status.details) if status is not None else []
    for detail in details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = [(v.field, v.reason, v.description) for v in bad.field_violations]
    return ErrorDetails(code, message, reason, domain, metadata, tuple(violations))


class DelegationClient:
    """Both services over one channel; every call carries ``timeout`` seconds as its deadline."""

    def __init__(
        self,
        address: str,
        timeout: float = 5.0,
        operator_token: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self._channel = (
            grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
        )
        self._timeout = timeout
        self._operator_metadata = (("authorization", f"Bearer {operator_token}"),) if operator_token else ()
        self.public = delegation_pb2_grpc.DelegationServiceStub(self._channel)
        self.admin = admin_pb2_grpc.DelegationAdminServiceStub(self._channel)

    def __enter__(self) -> DelegationClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def delegate(
        self,
        parent_token: str,
        client_id: str,
        scopes: Sequence[str] = (),
        *,
        lifetime_seconds: int | None = None,
        allow_partial: bool = False,
        validate_only: bool = False,
    ) -> delegation_pb2.DelegateResponse:
        """Ask for a child token."""
        request = delegation_pb2.DelegateRequest(
            parent_token=parent_token,
            client_id=client_id,
            scopes=list(scopes),
            allow_partial=allow_partial,
            validate_only=validate_only,
        )
        if lifetime_seconds is not None:
            request.lifetime.seconds = lifetime_seconds
        response: delegation_pb2.DelegateResponse = self.public.Delegate(request, timeout=self._timeout)
        return response

    def introspect(self, token: str) -> delegation_pb2.IntrospectResponse:
        """Introspect a token.

        The server answers authorised callers only (unless it runs in open mode): a client certificate
        on its list (``credentials``), or ``operator_token`` (an operator secret, or a JWT holding the
        introspection or operator scope), which is sent here too.
        """
        response: delegation_pb2.IntrospectResponse = self.public.Introspect(
            delegation_pb2.IntrospectRequest(token=token),
            timeout=self._timeout,
            metadata=self._operator_metadata,
        )
        return response

    def revoke(self, token: str) -> None:
        """Revoke a token the caller holds."""
        self.public.Revoke(delegation_pb2.RevokeRequest(token=token), timeout=self._timeout)

    def jwks(self) -> delegation_pb2.GetJwksResponse:
        """The JWK Set that verifies child tokens."""
        response: delegation_pb2.GetJwksResponse = self.public.GetJwks(
            delegation_pb2.GetJwksRequest(), timeout=self._timeout
        )
        return response

    def revoke_chain(
        self, chain_id: str, token_id: str = "", dry_run: bool = False, justification: str = ""
    ) -> admin_pb2.RevokeChainResponse:
        """Operator: revoke a chain (or a token of it)."""
        response: admin_pb2.RevokeChainResponse = self.admin.RevokeChain(
            admin_pb2.RevokeChainRequest(
                chain_id=chain_id, token_id=token_id, dry_run=dry_run, justification=justification
            ),
            timeout=self._timeout,
            metadata=self._operator_metadata,
        )
        return response

    def revoke_subject(self, subject: str, justification: str = "") -> admin_pb2.RevokeSubjectResponse:
        """Operator: revoke every token of a subject issued up to now."""
        response: admin_pb2.RevokeSubjectResponse = self.admin.RevokeSubject(
            admin_pb2.RevokeSubjectRequest(subject=subject, justification=justification),
            timeout=self._timeout,
            metadata=self._operator_metadata,
        )
        return response

    def revoke_client(self, client_id: str, justification: str = "") -> admin_pb2.RevokeClientResponse:
        """Operator: revoke every token of a client issued up to now."""
        response: admin_pb2.RevokeClientResponse = self.admin.RevokeClient(
            admin_pb2.RevokeClientRequest(client_id=client_id, justification=justification),
            timeout=self._timeout,
            metadata=self._operator_metadata,
        )
        return response

    def get_chain(self, chain_id: str) -> admin_pb2.GetChainResponse:
        """Operator: the tokens of a chain with their states."""
        response: admin_pb2.GetChainResponse = self.admin.GetChain(
            admin_pb2.GetChainRequest(chain_id=chain_id),
            timeout=self._timeout,
            metadata=self._operator_metadata,
        )
        return response
