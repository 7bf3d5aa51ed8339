"""The revocation model (SPEC §5), independent of any store.

Chains are one level deep: an upstream token is the root, every child is minted from a root (a delegated
token can never be a parent). So a token is inactive when any of these holds, each a constant-size read:

* it is expired;
* it is a delegated token the service has no record of;
* its own revocation marker is set (revokes that token alone: nothing is minted from a child);
* its chain's marker is set (revoking the root revokes everything minted from it);
* a *horizon* ("everything issued at or before T") covers it: the subject's horizon against the chain's
  root issue time, the holder client's horizon against its own issue time, and the root client's
  horizon against the root's issue time.

Revoking therefore writes one marker or one horizon, whatever the chain's size.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from delegation_service.domain.tokens import ChildToken, TokenKind, VerifiedToken


class TokenState(enum.Enum):
    """The state of a token as the service sees it."""

    ACTIVE = "active"
    REVOKED = "revoked"
    EXPIRED = "expired"
    UNKNOWN = "unknown"


class RevocationKind(enum.StrEnum):
    """What a revocation applies to: the one list of kinds the stores, the stream, the metrics and the
    edge share (a string enum: its values are what the stores keep and the metrics label)."""

    TOKEN = "token"
    CHAIN = "chain"
    SUBJECT = "subject"
    CLIENT = "client"


class HorizonKind(enum.Enum):
    """What a horizon is set on."""

    SUBJECT = "subject"
    CLIENT = "client"

    @property
    def revocation_kind(self) -> RevocationKind:
        """The kind of the revocation that moves this horizon."""
        return RevocationKind(self.value)


@dataclass(frozen=True)
class HorizonKey:
    """A subject or a client whose tokens issued at or before some time are revoked."""

    kind: HorizonKind
    value: str


@dataclass(frozen=True)
class TokenRecord:
    """What the store keeps of a token: enough to answer introspection and to list a chain."""

    token_id: str
    chain_id: str
    kind: TokenKind
    parent_token_id: str | None
    subject: str
    client_id: str
    root_client_id: str
    scopes: str
    bearer: str
    issued_at: int
    root_issued_at: int
    expires_at: int

    def horizon_checks(self) -> tuple[tuple[HorizonKey, int], ...]:
        """Each horizon that applies to this token, with the issue time it is compared against."""
        checks = [(HorizonKey(HorizonKind.SUBJECT, self.subject), self.root_issued_at)]
        if self.client_id:
            checks.append((HorizonKey(HorizonKind.CLIENT, self.client_id), self.issued_at))
        if self.root_client_id and self.root_client_id != self.client_id:
            checks.append((HorizonKey(HorizonKind.CLIENT, self.root_client_id), self.root_issued_at))
        return tuple(checks)

    def horizon_keys(self) -> tuple[HorizonKey, ...]:
        """The horizons a state check must read for this token."""
        return tuple(key for key, _ in self.horizon_checks())


@dataclass(frozen=True)
class StateSnapshot:
    """Everything one state check read from the store, in one round trip."""

    record: TokenRecord | None
    token_revoked: bool
    chain_revoked: bool
    horizons: Mapping[HorizonKey, int]


def evaluate(expected: TokenRecord, snapshot: StateSnapshot, now: int) -> TokenState:
    """The state of a token, given what its verified claims say (``expected``) and what the store holds.

    A delegated token counts only if the store has its record: a valid signature alone never makes a
    token active. An upstream root needs no record (it is recorded when it first delegates).
    """
    record = snapshot.record
    if record is None:
        if expected.kind is TokenKind.DELEGATED:
            return TokenState.UNKNOWN
        record = expected
    elif not _same_token(record, expected):
        # The horizons read were chosen from the claims; a record about anyone else would make the
        # check consult the wrong horizons, so it is no record of this token at all.
        return TokenState.UNKNOWN
    return state_of(record, snapshot, now)


def _same_token(record: TokenRecord, expected: TokenRecord) -> bool:
    return (
        record.kind is expected.kind
        and record.chain_id == expected.chain_id
        and record.token_id == expected.token_id
        and record.subject == expected.subject
        and record.client_id == expected.client_id
        and record.root_client_id == expected.root_client_id
    )


def state_of(record: TokenRecord, snapshot: StateSnapshot, now: int) -> TokenState:
    """The state of a recorded token given its markers and the horizons read with it."""
    if record.expires_at <= now:
        return TokenState.EXPIRED
    if snapshot.chain_revoked or snapshot.token_revoked:
        return TokenState.REVOKED
    for key, issued_at in record.horizon_checks():
        horizon = snapshot.horizons.get(key)
        if horizon is not None and issued_at <= horizon:
            return TokenState.REVOKED
    return TokenState.ACTIVE


@dataclass(frozen=True)
class ChainSnapshot:
    """A chain as the store holds it: its records, its markers and the horizons that touch it."""

    chain_id: str
    records: tuple[TokenRecord, ...]
    chain_revoked: bool
    revoked_token_ids: frozenset[str]
    horizons: Mapping[HorizonKey, int]

    def states(self, now: int) -> list[tuple[TokenRecord, TokenState]]:
        """Each record with its state, roots first, then by issue time."""
        ordered = sorted(
            self.records, key=lambda r: (r.kind is not TokenKind.UPSTREAM, r.issued_at, r.token_id)
        )
        return [
            (
                record,
                state_of(
                    record,
                    StateSnapshot(
                        record,
                        record.token_id in self.revoked_token_ids,
                        self.chain_revoked,
                        self.horizons,
                    ),
                    now,
                ),
            )
            for record in ordered
        ]


def record_of(token: VerifiedToken) -> TokenRecord:
    """The record a verified token is expected to have.

    For an upstream root this is the record to keep; for a delegated token it names the keys to read,
    while the stored record stays authoritative (``root_issued_at`` is only known from it).
    """
    upstream = token.kind is TokenKind.UPSTREAM
    return TokenRecord(
        token_id=token.token_id,
        chain_id=token.chain_id,
        kind=token.kind,
        parent_token_id=token.parent_token_id,
        subject=token.subject,
        client_id=token.client_id,
        root_client_id=token.client_id if upstream else (token.actor_client_id or ""),
        scopes=" ".join(token.scopes),
        bearer=str(token.bearer),
        issued_at=token.issued_at,
        root_issued_at=token.issued_at,
        expires_at=token.expires_at,
    )


def lineage_problem(root: TokenRecord, child: TokenRecord) -> str | None:
    """Why ``child`` cannot be recorded as a child of ``root``, or ``None`` when it can.

    Chains are one level deep and a child shares its root's chain, subject and bearer and never outlives
    it (SPEC §3): a store may keep a child as what differs from its root and borrow the rest.
    """
    if root.kind is not TokenKind.UPSTREAM or child.kind is not TokenKind.DELEGATED:
        return "a chain has an upstream root and delegated children"
    shared = (root.chain_id, root.token_id, root.subject, root.bearer, root.client_id, root.issued_at)
    if shared != (
        child.chain_id,
        child.parent_token_id,
        child.subject,
        child.bearer,
        child.root_client_id,
        child.root_issued_at,
    ):
        return "the child's chain, parent, subject, bearer or root facts differ from its root's"
    if child.expires_at > root.expires_at:
        return "a child never outlives its root"
    return None


def root_is_active(root: TokenRecord, snapshot: StateSnapshot, now: int) -> bool:
    """Whether a child may be minted from ``root``, given what the minting step read of it: the one rule.

    The root must be active by :func:`evaluate` (no marker, no horizon covering it, not expired) and any
    stored record of it must be the same token (:func:`same_root`). A store may judge the same at its
    own edge, so that judging and recording are one atomic step (the Redis store's ``mint.lua``, by
    Redis's clock); the contract suite checks that every store records exactly when this rule says so.
    """
    stored = snapshot.record
    if stored is not None and not same_root(stored, root):
        return False
    return evaluate(root, snapshot, now) is TokenState.ACTIVE


def same_root(stored: TokenRecord, presented: TokenRecord) -> bool:
    """Whether a stored root record describes the root token presented now.

    Everything a child's record borrows from its root, and everything a state check reads, must agree;
    only the scopes may differ (the record kept is the first one written).
    """
    return (
        stored.kind is presented.kind is TokenKind.UPSTREAM
        and stored.chain_id == presented.chain_id
        and stored.token_id == presented.token_id
        and stored.subject == presented.subject
        and stored.client_id == presented.client_id
        and stored.bearer == presented.bearer
        and stored.issued_at == presented.issued_at
        and stored.expires_at == presented.expires_at
    )


def record_child(child: ChildToken, root: TokenRecord) -> TokenRecord:
    """The record of a child about to be minted from ``root``."""
    return TokenRecord(
        token_id=child.token_id,
        chain_id=child.chain_id,
        kind=TokenKind.DELEGATED,
        parent_token_id=child.parent_token_id,
        subject=child.subject,
        client_id=child.client_id,
        root_client_id=root.client_id,
        scopes=child.scope_claim,
        bearer=str(child.bearer),
        issued_at=child.issued_at,
        root_issued_at=root.issued_at,
        expires_at=child.expires_at,
    )
