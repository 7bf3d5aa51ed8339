"""The narrow interfaces the use cases need; adapters implement them.

The token store is split by use (Fosite keeps one small storage interface beside each flow): delegating
and checking (:class:`DelegationStore`), revoking (:class:`RevocationStore`), following
(:class:`RevocationLog`), viewing a chain (:class:`ChainViews`) and readiness (:class:`StoreHealth`).
A registry implements them all (:class:`TokenRegistry`) and passes the one contract suite in
``tests/contract``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from delegation_service.domain.revocation import (
    ChainSnapshot,
    HorizonKey,
    RevocationKind,
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
    """One revocation, as published to followers of the revocation stream (and mirrored at the edge,
    where ``cursor`` is the stream's position of it). A kind names only its own target, so the others
    default to empty; times are seconds since the epoch."""

    cursor: str
    kind: RevocationKind
    chain_id: str = ""
    token_id: str = ""
    subject: str = ""
    client_id: str = ""
    revoked_at: int = 0
    expires_at: int = 0


@dataclass(frozen=True)
class MintOutcome:
    """What minting read of the root's state (in the same atomic step), and whether it recorded the child.

    The use case judges ``snapshot`` with the domain's rule (it is authoritative); ``recorded`` is
    ``False`` when the store found the root inactive and wrote nothing.
    """

    snapshot: StateSnapshot
    recorded: bool


@dataclass(frozen=True)
class ChainRevocation:
    """What revoking a whole chain found (and, unless a dry run, did), from constant-cost reads.

    ``unexpired_token_count`` counts the chain's tracked tokens not yet expired by the store's clock,
    root included, whether or not some were revoked one by one before; ``client_ids`` are the clients
    holding those tokens (the root's too). ``already_revoked`` says the chain's marker was set before
    this call. ``event`` is the published revocation, ``None`` for a dry run.
    """

    already_revoked: bool
    unexpired_token_count: int
    client_ids: tuple[str, ...]
    event: RevocationEvent | None


class DelegationStore(Protocol):
    """What delegating and checking a token need of the store: read a token's state, record a child.

    Every store port raises :class:`~delegation_service.domain.errors.StoreUnavailable` when the store
    cannot be reached: callers fail closed.
    """

    def snapshot(self, expected: TokenRecord) -> StateSnapshot:
        """Read, in one round trip where possible, what decides the state of ``expected``'s token."""
        ...

    def mint(self, root: TokenRecord, child: TokenRecord) -> MintOutcome:
        """Read what decides ``root``'s state and record ``child`` only if the root is active, atomically.

        Active here is :func:`~.revocation.root_is_active` (the one rule), judged by the store in the
        same step as the write. The root is recorded with its first child. The child is recorded before
        anything points at it, and every key expires with its token. Raises ``ValueError`` when
        ``child`` is not a child of ``root`` (:func:`~.revocation.lineage_problem`).
        """
        ...


class RevocationStore(Protocol):
    """What revoking needs of the store: a holder's token or chain, an operator's chain, subject or
    client, and the record of the token an operator names."""

    def revoke_token(self, chain_id: str, token_id: str, expires_at: int, now: int) -> RevocationEvent:
        """Mark one token revoked until ``expires_at``; idempotent."""
        ...

    def revoke_chain(self, chain_id: str, expires_at: int, now: int) -> RevocationEvent:
        """Mark a whole chain revoked until ``expires_at`` (a single write); idempotent."""
        ...

    def revoke_known_chain(self, chain_id: str, now: int, *, dry_run: bool = False) -> ChainRevocation | None:
        """Revoke a chain the store knows, marker first, and report its blast radius; ``None`` otherwise.

        The marker lives until the root's expiry (plus leeway), or for the horizon retention when no
        root record is left. The blast radius comes from constant-cost reads, whatever the chain's
        size. A dry run reads the same and writes nothing. A chain the store holds neither a record nor
        a marker of is left alone (``None``).
        """
        ...

    def revoke_horizon(self, key: HorizonKey, at: int, now: int) -> RevocationEvent:
        """Revoke every token of a subject or client issued at or before ``at`` (never moves back)."""
        ...

    def record(self, chain_id: str, token_id: str) -> TokenRecord | None:
        """The live record of one token of a chain, or ``None``."""
        ...


class RevocationLog(Protocol):
    """What following the revocations needs of the store (the ``WatchRevocations`` feed)."""

    def events(self, after: str | None, limit: int) -> Sequence[RevocationEvent]:
        """Up to ``limit`` revocation events after cursor ``after`` (from the oldest retained when
        ``None``), oldest first; raises ``CursorExpired`` when events after ``after`` may no longer be
        retained (the follower must start again from a snapshot, never silently miss them)."""
        ...


class ChainViews(Protocol):
    """What an operator's view of a chain needs of the store (``GetChain``, the CLI's ``chain show``)."""

    def chain(self, chain_id: str, limit: int) -> ChainSnapshot | None:
        """Up to ``limit`` records of a chain (its root, then the children that expire last), its markers
        and horizons; ``None`` when the store knows nothing of it."""
        ...


class StoreHealth(Protocol):
    """What readiness needs of the store."""

    def ping(self) -> bool:
        """Whether the store answers right now."""
        ...


class TokenRegistry(DelegationStore, RevocationStore, RevocationLog, ChainViews, StoreHealth, Protocol):
    """A whole token store (SPEC §5): what the Redis and the memory registries implement, and what the
    one contract suite checks, port by port. Each use case is given only the ports it uses."""


class AuditSink(Protocol):
    """Where the audit trail goes: one structured event per mint, refusal, revocation and operator action.

    The use cases (and the transport's access gate, for calls it turns away) say what happened; the
    sink (:class:`delegation_service.audit.AuditLog`, wired by the composition root) redacts and writes.
    """

    def record(
        self,
        message: str,
        *,
        event: str,
        outcome: str,
        reason: str = "",
        jti: str = "",
        chain_id: str = "",
        client_id: str = "",
        bearer: str = "",
        caller: str = "",
        **fields: object,
    ) -> None:
        """Write one audit event; ``fields`` beyond the common ones are added as they are."""
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
