"""Who is calling: operator credentials for the admin service, and a caller identity for the audit log."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Protocol

import grpc

from delegation_service.domain.errors import OperatorCredentialsRequired

_BEARER_PREFIX = "bearer "
_ADMIN_PREFIX = "/delegation.v1.DelegationAdminService/"


class CallerGate(Protocol):
    """Decides, per call, who is calling and whether they may (``transport.authz.AccessGate``)."""

    def admit(self, method: str, context: grpc.ServicerContext) -> str:
        """The caller's identity for the audit log; raise a ``DelegationError`` to refuse the call."""
        ...


class OperatorAuthenticator:
    """Checks ``authorization: Bearer <secret>`` against configured SHA-256 digests of operator secrets.

    Only digests are configured, so a leaked configuration file does not leak a usable credential.
    With ``open_mode`` (the dev server on loopback only) every caller counts as an operator.
    """

    def __init__(self, token_sha256: Iterable[str], open_mode: bool = False) -> None:
        self._digests = tuple(bytes.fromhex(d) for d in token_sha256)
        self._open_mode = open_mode

    def authenticate(self, metadata: Iterable[tuple[str, str | bytes]]) -> str:
        """The operator's identity (a digest prefix, never the secret), or raise."""
        for key, value in metadata:
            if key == "authorization" and isinstance(value, str) and value.lower().startswith(_BEARER_PREFIX):
                digest = hashlib.sha256(value[len(_BEARER_PREFIX) :].strip().encode()).digest()
                # Compare against every digest, without an early exit, so timing says nothing.
                matches = [hmac.compare_digest(digest, known) for known in self._digests]
                if any(matches):
                    return "operator:" + digest.hex()[:12]
        if self._open_mode:
            return "operator:dev-open-mode"
        raise OperatorCredentialsRequired()

    def admit(self, method: str, context: grpc.ServicerContext) -> str:
        """Operator secrets for the admin service only; every other call is open (the :class:`CallerGate`
        of a server built without :class:`~delegation_service.transport.authz.AccessGate`)."""
        if method.startswith(_ADMIN_PREFIX):
            return self.authenticate(context.invocation_metadata() or ())
        return str(context.peer())


def operator_secret_digest(secret: str) -> str:
    """The value to put in ``operators.token_sha256`` for an operator secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


_caller: ContextVar[str] = ContextVar("caller", default="")


def set_caller(identity: str) -> None:
    """Record who makes the current call (set by the interceptor, in the thread that serves it)."""
    _caller.set(identity)


def current_caller() -> str:
    """Who makes the current call: the authenticated operator, else the peer address."""
    return _caller.get()
