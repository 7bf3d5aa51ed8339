"""Who is calling, from what the connection and the metadata prove; and whether the call may proceed.

Three kinds of caller credentials, any of which may prove a role (the rule itself lives in
:mod:`delegation_service.domain.access`):

* a client certificate (mTLS) whose subject CN or a SAN is on ``access.operator_identities`` or
  ``access.introspection_identities``; gRPC has already verified it against ``tls.client_ca_file``;
* ``authorization: Bearer <secret>`` matching one of ``operators.token_sha256`` (operators only);
* ``authorization: Bearer <JWT>`` from a trusted issuer, verified and checked for revocation like a
  parent token, holding ``access.operator_scope`` or ``access.introspection_scope``.

A bearer value that is neither a known secret nor a valid JWT counts as no credential. Refusals are
audited here, since no use case runs for a call that is turned away.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import grpc

from delegation_service.domain.access import AccessMode, Caller, Operation, Role, authorize
from delegation_service.domain.errors import DelegationError, ParentRejected
from delegation_service.domain.ports import AuditSink
from delegation_service.domain.tokens import VerifiedToken
from delegation_service.transport.tls import peer_certificate_names

PUBLIC_PREFIX = "/delegation.v1.DelegationService/"

OPERATIONS: Mapping[str, Operation] = {
    PUBLIC_PREFIX + "Delegate": Operation.DELEGATE,
    PUBLIC_PREFIX + "Revoke": Operation.REVOKE_OWN_TOKEN,
    PUBLIC_PREFIX + "GetJwks": Operation.GET_JWKS,
    PUBLIC_PREFIX + "Introspect": Operation.INTROSPECT,
    PUBLIC_PREFIX + "WatchRevocations": Operation.WATCH_REVOCATIONS,
}
"""Public methods by full name. Anything else under ``delegation.v1`` (every admin method, and any
method added later without an entry here) needs the operator role: new methods fail closed."""

_BEARER_PREFIX = "bearer "
MAX_BEARER_LENGTH = 8192


class CallerTokens(Protocol):
    """Verifies a bearer JWT presented as a caller credential (the use case does the checks)."""

    def authenticate_caller(self, raw_token: str) -> VerifiedToken:
        """The verified, active upstream token; raise a ``DelegationError`` otherwise."""
        ...


def operation_for(method: str) -> Operation:
    """The operation a full gRPC method name stands for (unknown ones need the operator role)."""
    return OPERATIONS.get(method, Operation.OPERATOR_ACTION)


class AccessGate:
    """Identifies the caller of each ``delegation.v1`` call and applies the access rule."""

    def __init__(
        self,
        *,
        audit: AuditSink,
        mode: AccessMode = AccessMode.AUTHENTICATED,
        operator_token_sha256: Iterable[str] = (),
        operator_identities: Iterable[str] = (),
        introspection_identities: Iterable[str] = (),
        caller_tokens: CallerTokens | None = None,
        operator_scope: str = "",
        introspection_scope: str = "",
        everyone_is_operator: bool = False,
    ) -> None:
        self._audit = audit
        self._mode = mode
        self._digests = tuple(bytes.fromhex(d) for d in operator_token_sha256)
        self._operator_names = frozenset(operator_identities)
        self._introspector_names = frozenset(introspection_identities)
        self._tokens = caller_tokens if (operator_scope or introspection_scope) else None
        self._operator_scope = operator_scope
        self._introspection_scope = introspection_scope
        self._everyone_is_operator = everyone_is_operator

    def admit(self, method: str, context: grpc.ServicerContext) -> str:
        """The caller's identity (for the audit log) when it may call ``method``; raise otherwise."""
        operation = operation_for(method)
        if operation in (Operation.DELEGATE, Operation.REVOKE_OWN_TOKEN, Operation.GET_JWKS):
            # The presented token is the credential: no bearer parsing, no store read for these.
            return self._certificate_caller(context).identity
        caller = self.identify(context)
        try:
            authorize(caller, operation, self._mode)
        except DelegationError as refused:
            self._audit.record(
                "access denied",
                event="access",
                outcome="denied",
                reason=refused.reason.identifier,
                caller=caller.identity,
                method=method,
            )
            raise
        return caller.identity

    def identify(self, context: grpc.ServicerContext) -> Caller:
        """Everything the caller's credentials prove: identity, roles, whether it is authenticated."""
        by_certificate = self._certificate_caller(context)
        by_bearer = self._bearer_caller(context.invocation_metadata())
        if by_bearer is None:
            caller = by_certificate
        elif by_certificate.authenticated:
            caller = Caller(
                f"{by_certificate.identity}+{by_bearer.identity}",
                by_certificate.roles | by_bearer.roles,
                authenticated=True,
            )
        else:
            caller = by_bearer
        if self._everyone_is_operator:
            return Caller(caller.identity, caller.roles | {Role.OPERATOR}, authenticated=True)
        return caller

    def _certificate_caller(self, context: grpc.ServicerContext) -> Caller:
        names = peer_certificate_names(context.auth_context())
        if not names:
            return Caller(f"peer:{context.peer()}")
        roles: set[Role] = set()
        if self._operator_names.intersection(names):
            roles.add(Role.OPERATOR)
        if self._introspector_names.intersection(names):
            roles.add(Role.INTROSPECTOR)
        return Caller(f"mtls:{names[0]}", frozenset(roles), authenticated=True)

    def _bearer_caller(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> Caller | None:
        value = _bearer(metadata or ())
        if value is None:
            return None
        digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()
        # Compare against every digest, without an early exit, so timing says nothing.
        matches = [hmac.compare_digest(digest, known) for known in self._digests]
        if any(matches):
            return Caller("operator:" + digest.hex()[:12], frozenset({Role.OPERATOR}), authenticated=True)
        if self._tokens is None or value.count(".") != 2:
            return None
        try:
            token = self._tokens.authenticate_caller(value)
        except ParentRejected:
            # Not a valid credential: the call goes on unauthenticated and is refused by role. Anything
            # else (the store down, a deadline) propagates: a client must retry, not log in again.
            return None
        roles: set[Role] = set()
        if self._operator_scope and self._operator_scope in token.scopes:
            roles.add(Role.OPERATOR)
        if self._introspection_scope and self._introspection_scope in token.scopes:
            roles.add(Role.INTROSPECTOR)
        who = token.client_id or token.subject
        return Caller(f"jwt:{who}@{token.issuer}", frozenset(roles), authenticated=True)


def _bearer(metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
    """The value of the first ``authorization: Bearer ...`` header, if any (bounded, printable)."""
    for key, value in metadata:
        if key != "authorization" or not isinstance(value, str):
            continue
        if value[: len(_BEARER_PREFIX)].lower() != _BEARER_PREFIX:
            continue
        token = value[len(_BEARER_PREFIX) :].strip()
        if token and len(token) <= MAX_BEARER_LENGTH and token.isprintable():
            return token
        return None
    return None
