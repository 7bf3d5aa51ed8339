"""Who is calling: the gate every call passes (``transport.authz.AccessGate``) and the caller's identity
recorded for the audit log."""

from __future__ import annotations

import hashlib
from contextvars import ContextVar
from typing import Protocol

import grpc


class CallerGate(Protocol):
    """Decides, per call, who is calling and whether they may (``transport.authz.AccessGate``)."""

    def admit(self, method: str, context: grpc.ServicerContext) -> str:
        """The caller's identity for the audit log; raise a ``DelegationError`` to refuse the call."""
        ...


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
