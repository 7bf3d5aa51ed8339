"""The narrow interfaces the use cases need; adapters implement them.

Every registry implementation passes the one contract suite in ``tests/contract``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from delegation_service.domain.revocation import (
    ChainSnapshot,
    HorizonKey,
    StateSnapshot,
    TokenRecord,
)
from delegation_service.domain.tokens import ChildToken, VerifiedToken


class Clock(Protocol):
    """Wall-clock time in whole seconds since the epoch."""

    def now(self) -> int:
        """The current time."""
        ...


@dataclass(frozen=True)
class RevocationEvent:
    """One revocation, as published to followers of the revocation stream."""

    cursor: str
    kind: str  # "token", "chain", "subject" or "client"
    chain_id: str
    token_id: str
    subject: str
    client_id: str
    revoked_at: int
    expires_at: int


class TokenRegistry(Protocol):
    """Where minted tokens, revocation markers and horizons live (SPEC §5).

    Implementations raise :class:`~delegation_service.domain.errors.StoreUnavailable` when the store
    cannot be reached: callers fail closed.
    """

    def snapshot(self, expected: TokenRecord) -> StateSnapshot:
        """Read, in one round trip where possible, what decides the state of ``expected``'s token."""
        ...

    def record_child(self, root: TokenRecord, child: TokenRecord) -> bool:
        """Record ``child`` (and ``root`` if not yet recorded) atomically within the chain.

        The child is recorded before anything points at it, and nothing is written when the chain is
        already revoked: then the call returns ``False``. Every key expires with its token.
        """
        ...

    def revoke_token(self, chain_id: str, token_id: str, expires_at: int, now: int) -> RevocationEvent:
        """Mark one token revoked until ``expires_at``; idempotent."""
        ...

    def revoke_chain(self, chain_id: str, expires_at: int, now: int) -> RevocationEvent:
        """Mark a whole chain revoked until ``expires_at`` (a single write); idempotent."""
        ...

    def revoke_horizon(self, key: HorizonKey, at: int, now: int) -> RevocationEvent:
        """Revoke every token of a subject or client issued at or before ``at`` (never moves back)."""
        ...

    def chain(self, chain_id: str) -> ChainSnapshot | None:
        """The records and markers of a chain, or ``None`` when the store knows nothing of it."""
        ...

    def events(self, after: str | None, limit: int) -> Sequence[RevocationEvent]:
        """Revocation events after cursor ``after`` (from the oldest retained when ``None``)."""
        ...

    def ping(self) -> bool:
        """Whether the store answers right now."""
        ...


class TokenSigner(Protocol):
    """Signs child tokens with the active key; publishes the public keys."""

    def sign(self, child: ChildToken) -> str:
        """The compact JWS of ``child``'s claims, with ``typ: at+jwt`` and the active ``kid``."""
        ...

    def jwks(self) -> Mapping[str, object]:
        """The public JWK Set (never any private member)."""
        ...


class TokenVerifier(Protocol):
    """Verifies tokens presented to the service: upstream parents and its own children."""

    def verify(self, raw_token: str) -> VerifiedToken:
        """Verify signature, algorithm, issuer, audience and times; raise ``ParentRejected`` otherwise."""
        ...
