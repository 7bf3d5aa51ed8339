"""Use cases: delegate, introspect, revoke, and the operator's chain, subject and client revocations.

Plain Python over the domain and its ports: no gRPC, no Redis, no JWT library here.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from delegation_service.domain.errors import (
    ChainNotFound,
    DelegationError,
    InvalidRequest,
    ParentCannotDelegate,
    ParentRejected,
    Reason,
    Violation,
)
from delegation_service.domain.policy import DelegationPolicy, DelegationRequest
from delegation_service.domain.ports import Clock, RevocationEvent, TokenRegistry, TokenSigner, TokenVerifier
from delegation_service.domain.revocation import (
    HorizonKey,
    HorizonKind,
    TokenRecord,
    TokenState,
    evaluate,
    record_child,
    record_of,
)
from delegation_service.domain.scopes import StructuredScope, UrlScope
from delegation_service.domain.tokens import ChildToken, LifetimePolicy, TokenKind, VerifiedToken

audit = logging.getLogger("delegation_service.audit")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DelegateCommand:
    """A delegation request, decoded from the transport."""

    parent_token: str
    client_id: str
    scopes: Sequence[str] = ()
    lifetime_seconds: int | None = None
    allow_partial: bool = False
    validate_only: bool = False


@dataclass(frozen=True)
class DelegateResult:
    """The minted child (``access_token`` is ``None`` under validate_only) and the dropped scopes."""

    child: ChildToken
    access_token: str | None
    dropped: tuple[Violation, ...]


@dataclass(frozen=True)
class Introspection:
    """An introspection answer: the verified token only when it is active."""

    token: VerifiedToken | None

    @property
    def active(self) -> bool:
        """Whether the token is active."""
        return self.token is not None


@dataclass(frozen=True)
class BlastRadius:
    """What a chain revocation revokes (or would, on a dry run)."""

    revoked_token_count: int
    client_ids: tuple[str, ...]
    dry_run: bool
    revoked_at: int | None


@dataclass(frozen=True)
class ChainView:
    """A chain's tokens with their states, root first."""

    chain_id: str
    revoked: bool
    tokens: tuple[tuple[TokenRecord, TokenState], ...]


def new_token_id() -> str:
    """A fresh, unguessable token id (128 bits)."""
    return secrets.token_urlsafe(16)


class DelegationService:
    """The use cases of the service, wired once by the composition root."""

    def __init__(
        self,
        *,
        issuer: str,
        verifier: TokenVerifier,
        signer: TokenSigner,
        registry: TokenRegistry,
        policy: DelegationPolicy,
        lifetimes: LifetimePolicy,
        clock: Clock,
        max_parent_age_seconds: int,
        token_ids: Callable[[], str] = new_token_id,
    ) -> None:
        self._issuer = issuer
        self._verifier = verifier
        self._signer = signer
        self._registry = registry
        self._policy = policy
        self._lifetimes = lifetimes
        self._clock = clock
        self._token_ids = token_ids
        self._max_parent_age = max_parent_age_seconds

    # -- DelegationService ------------------------------------------------------------------------

    def delegate(self, command: DelegateCommand, caller: str = "") -> DelegateResult:
        """Mint a child token (SPEC §3), or raise the :class:`DelegationError` that explains why not."""
        try:
            result = self._delegate(command)
        except DelegationError as refused:
            audit.info(
                "delegate denied",
                extra={
                    "event": "delegate",
                    "outcome": "denied",
                    "reason": refused.reason.identifier,
                    "detail": getattr(refused, "detail", ""),
                    "client_id": command.client_id,
                    "caller": caller,
                },
            )
            raise
        child = result.child
        audit.info(
            "delegate validated" if result.access_token is None else "delegate minted",
            extra={
                "event": "delegate",
                "outcome": "validated" if result.access_token is None else "minted",
                "jti": child.token_id,
                "chain_id": child.chain_id,
                "client_id": child.client_id,
                "actor": child.actor_client_id,
                "bearer": str(child.bearer),
                "scope": child.scope_claim,
                "exp": child.expires_at,
                "caller": caller,
            },
        )
        return result

    def _delegate(self, command: DelegateCommand) -> DelegateResult:
        parent = self._verify(command.parent_token)
        root = self._active_record(parent)
        if parent.kind is TokenKind.DELEGATED:
            # Decided from our own record (rule 4): the token is tracked as a child of some chain.
            raise ParentCannotDelegate()
        decision = self._policy.decide(
            parent,
            DelegationRequest(command.client_id, command.scopes, command.allow_partial),
        )
        now = self._clock.now()
        expires_at = self._lifetimes.child_expiry(now, parent.expires_at, command.lifetime_seconds)
        child = ChildToken(
            token_id=self._token_ids(),
            chain_id=parent.chain_id,
            parent_token_id=parent.token_id,
            issuer=self._issuer,
            subject=parent.subject,
            audiences=_audiences(decision.granted),
            client_id=command.client_id,
            actor_client_id=parent.client_id,
            scopes=decision.granted,
            bearer=parent.bearer,
            issued_at=now,
            expires_at=expires_at,
        )
        if command.validate_only:
            return DelegateResult(child, None, decision.dropped)
        # Record first, sign second: a crash in between leaves a record of a token nobody holds,
        # never a token the service cannot revoke.
        if not self._registry.record_child(root, record_child(child, root)):
            raise ParentRejected("chain revoked while delegating")
        return DelegateResult(child, self._signer.sign(child), decision.dropped)

    def introspect(self, raw_token: str) -> Introspection:
        """RFC 7662: the token's claims when it is active, nothing otherwise.

        An unverifiable token is simply inactive; an unreachable store is an error (fail closed).
        """
        try:
            token = self._verify(raw_token)
        except ParentRejected:
            return Introspection(None)
        state = evaluate(record_of(token), self._registry.snapshot(record_of(token)), self._clock.now())
        return Introspection(token if state is TokenState.ACTIVE else None)

    def revoke(self, raw_token: str, caller: str = "") -> None:
        """RFC 7009: revoke the presented token; revoking an upstream token revokes its whole chain.

        A token that does not verify is ignored (the answer is the same, as the RFC asks).
        """
        try:
            token = self._verifier.verify(raw_token)
        except ParentRejected:
            return
        now = self._clock.now()
        if token.kind is TokenKind.UPSTREAM:
            event = self._registry.revoke_chain(token.chain_id, token.expires_at, now)
        else:
            event = self._registry.revoke_token(token.chain_id, token.token_id, token.expires_at, now)
        self._audit_revocation(event, caller, "holder")

    def jwks(self) -> Mapping[str, object]:
        """The public keys that verify child tokens."""
        return self._signer.jwks()

    def follow_revocations(
        self, cursor: str | None, keep_going: Callable[[], bool], poll_seconds: float = 0.25
    ) -> Iterator[RevocationEvent]:
        """Revocation events after ``cursor``, as they happen, while ``keep_going()`` holds."""
        while keep_going():
            events = self._registry.events(cursor, 100)
            for event in events:
                yield event
                cursor = event.cursor
            if not events:
                time.sleep(poll_seconds)

    # -- DelegationAdminService -------------------------------------------------------------------

    def revoke_chain(
        self,
        chain_id: str,
        token_id: str = "",
        dry_run: bool = False,
        justification: str = "",
        caller: str = "",
    ) -> BlastRadius:
        """Revoke a chain, or one token of it with everything minted from it; report the blast radius."""
        if not chain_id:
            raise InvalidRequest(
                violations=[Violation("chain_id", "", Reason.INVALID_REQUEST, "chain_id is required")]
            )
        chain = self._registry.chain(chain_id)
        if chain is None:
            raise ChainNotFound()
        now = self._clock.now()
        states = chain.states(now)
        root_ids = {r.token_id for r, _ in states if r.kind is TokenKind.UPSTREAM}
        whole_chain = not token_id or token_id in root_ids
        targets = [(r, s) for r, s in states if whole_chain or r.token_id == token_id]
        if not targets:
            raise ChainNotFound(message="no such token in the chain")
        live = [r for r, s in targets if s is TokenState.ACTIVE]
        radius = BlastRadius(
            len(live),
            tuple(sorted({r.client_id for r in live if r.client_id})),
            dry_run,
            None if dry_run else now,
        )
        if dry_run:
            return radius
        expires_at = max(r.expires_at for r, _ in targets)
        if whole_chain:
            event = self._registry.revoke_chain(chain_id, expires_at, now)
        else:
            event = self._registry.revoke_token(chain_id, token_id, expires_at, now)
        self._audit_revocation(event, caller, "operator", justification, radius.revoked_token_count)
        return radius

    def revoke_subject(self, subject: str, justification: str = "", caller: str = "") -> int:
        """Revoke every token of ``subject`` issued up to now; returns the horizon."""
        return self._revoke_horizon(
            HorizonKey(HorizonKind.SUBJECT, subject), "subject", justification, caller
        )

    def revoke_client(self, client_id: str, justification: str = "", caller: str = "") -> int:
        """Revoke every token held or delegated by ``client_id`` issued up to now; returns the horizon."""
        return self._revoke_horizon(
            HorizonKey(HorizonKind.CLIENT, client_id), "client_id", justification, caller
        )

    def get_chain(self, chain_id: str) -> ChainView:
        """The tokens of a chain with their states."""
        chain = self._registry.chain(chain_id) if chain_id else None
        if chain is None:
            raise ChainNotFound()
        return ChainView(chain_id, chain.chain_revoked, tuple(chain.states(self._clock.now())))

    def ready(self) -> bool:
        """Whether the store answers (for health checks)."""
        return self._registry.ping()

    # -- helpers ------------------------------------------------------------------------------------

    def _verify(self, raw_token: str) -> VerifiedToken:
        """Verify a presented token; an upstream token may not live longer than the horizons last.

        Subject and client horizons are kept for ``max_parent_age_seconds``: a longer-lived upstream
        token could outlive the horizon that revoked it, so it is refused outright.
        """
        token = self._verifier.verify(raw_token)
        if token.kind is TokenKind.UPSTREAM and token.expires_at - token.issued_at > self._max_parent_age:
            raise ParentRejected("upstream token lives longer than tokens.max_parent_age_seconds")
        return token

    def _active_record(self, token: VerifiedToken) -> TokenRecord:
        """The token's record, when it is active; otherwise the (uniform) parent refusal."""
        expected = record_of(token)
        snapshot = self._registry.snapshot(expected)
        state = evaluate(expected, snapshot, self._clock.now())
        if state is not TokenState.ACTIVE:
            raise ParentRejected(f"parent is {state.value}")
        return snapshot.record or expected

    def _revoke_horizon(self, key: HorizonKey, field: str, justification: str, caller: str) -> int:
        if not key.value:
            raise InvalidRequest(
                violations=[Violation(field, "", Reason.INVALID_REQUEST, f"{field} is required")]
            )
        now = self._clock.now()
        event = self._registry.revoke_horizon(key, now, now)
        self._audit_revocation(event, caller, "operator", justification)
        return event.revoked_at  # the horizon in force: a later one may already have been set

    @staticmethod
    def _audit_revocation(
        event: RevocationEvent, caller: str, actor: str, justification: str = "", count: int | None = None
    ) -> None:
        audit.info(
            "revoke",
            extra={
                "event": "revoke",
                "outcome": "revoked",
                "kind": event.kind,
                "chain_id": event.chain_id,
                "jti": event.token_id,
                "subject": event.subject,
                "client_id": event.client_id,
                "actor": actor,
                "caller": caller,
                "justification": justification,
                "revoked_token_count": count,
                "cursor": event.cursor,
            },
        )


def _audiences(scopes: Sequence[StructuredScope | UrlScope]) -> tuple[str, ...]:
    """The child's ``aud``: the apps its scopes are for (URL-form scopes name their API)."""
    return tuple(sorted({s.audience if isinstance(s, StructuredScope) else s.url for s in scopes}))
