"""Use cases: delegate, introspect, revoke, and the operator's chain, subject and client revocations.

Plain Python over the domain and its ports: no gRPC, no Redis, no JWT library here, and no side effect
but through a port (the store's, the signer, the clock, the audit trail).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from delegation_service.domain.audience import narrow
from delegation_service.domain.binding import child_confirmation
from delegation_service.domain.errors import (
    ChainNotFound,
    DeadlineTooShort,
    DelegationError,
    InvalidRequest,
    ParentRejected,
    Reason,
    Violation,
)
from delegation_service.domain.policy import DelegationPolicy, DelegationRequest
from delegation_service.domain.ports import (
    AuditSink,
    ChainViews,
    Clock,
    DelegationStore,
    RevocationEvent,
    RevocationStore,
    StoreHealth,
    TokenSigner,
    TokenVerifier,
)
from delegation_service.domain.revocation import (
    HorizonKey,
    HorizonKind,
    TokenRecord,
    TokenState,
    evaluate,
    record_child,
    record_of,
    root_is_active,
)
from delegation_service.domain.tokens import ChildToken, LifetimePolicy, TokenKind, VerifiedToken

MINT_MARGIN_SECONDS = 0.005
"""Least time that must be left before the caller's deadline to start minting: recording and signing
take about a millisecond, and a token minted for a caller that has already given up would be recorded
for nobody. With less left, the call answers DEADLINE_EXCEEDED and mints nothing."""

CHAIN_VIEW_LIMIT = 1000
"""Most tokens one chain view (GetChain) lists: the root and the children that expire last. The blast
radius of a dry-run RevokeChain gives the whole chain's count."""

TimeLeft = Callable[[], float | None]
"""Seconds left before the caller's deadline, ``None`` when the call has none (gRPC's
``context.time_remaining``)."""


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
    """The use cases of the service, wired once by the composition root.

    The store comes as the narrow ports the use cases need (:mod:`~.domain.ports`), each used only by
    the use cases named beside it; the composition root passes one registry for all of them.
    """

    def __init__(
        self,
        *,
        issuer: str,
        verifier: TokenVerifier,
        signer: TokenSigner,
        tokens: DelegationStore,
        revocations: RevocationStore,
        chains: ChainViews,
        health: StoreHealth,
        policy: DelegationPolicy,
        lifetimes: LifetimePolicy,
        clock: Clock,
        max_parent_age_seconds: int,
        audit: AuditSink,
        token_ids: Callable[[], str] = new_token_id,
    ) -> None:
        self._issuer = issuer
        self._verifier = verifier
        self._signer = signer
        self._tokens = tokens  # delegate, introspect, authenticate_caller, an operator's one-token check
        self._revocations = revocations  # revoke (holders), revoke_chain/subject/client (operators)
        self._chains = chains  # get_chain
        self._health = health  # ready
        self._policy = policy
        self._lifetimes = lifetimes
        self._clock = clock
        self._token_ids = token_ids
        self._audit = audit
        self._max_parent_age = max_parent_age_seconds

    # -- DelegationService ------------------------------------------------------------------------

    def delegate(
        self,
        parent_token: str,
        request: DelegationRequest,
        caller: str = "",
        time_left: TimeLeft | None = None,
    ) -> DelegateResult:
        """Mint a child of ``parent_token`` (SPEC §3), or raise the :class:`DelegationError` that explains
        why not.

        ``time_left`` reports what is left of the caller's deadline; with less than
        :data:`MINT_MARGIN_SECONDS` left before minting, nothing is minted, and after recording,
        nothing is signed (:class:`DeadlineTooShort`).
        """
        parent: list[VerifiedToken] = []  # filled once the parent verifies, for the audit event
        try:
            result = self._delegate(parent_token, request, parent, time_left)
        except DelegationError as refused:
            known = parent[0] if parent else None
            self._audit.record(
                "delegate denied",
                event="delegate",
                outcome=_outcome(refused),
                reason=refused.reason.identifier,
                chain_id=known.chain_id if known else "",
                client_id=request.client_id,
                bearer=str(known.bearer) if known else "",
                caller=caller,
                parent_jti=known.token_id if known else "",
                subject=known.subject if known else "",
                detail=getattr(refused, "detail", ""),
                # Which fields failed and why; never the values (a scope may be anything).
                violations=[f"{v.field}:{v.reason.identifier}" for v in refused.violations],
            )
            raise
        child = result.child
        self._audit.record(
            "delegate validated" if result.access_token is None else "delegate minted",
            event="delegate",
            outcome="validated" if result.access_token is None else "minted",
            jti=child.token_id,
            chain_id=child.chain_id,
            client_id=child.client_id,
            bearer=str(child.bearer),
            caller=caller,
            parent_jti=child.parent_token_id,
            subject=child.subject,
            actor=child.actor_client_id,
            scope=child.scope_claim,
            exp=child.expires_at,
            dropped=[f"{v.field}:{v.reason.identifier}" for v in result.dropped] if result.dropped else [],
            # Which key the child is bound to (thumbprints are public), so a leak can be traced to it.
            cnf=child.confirmation.claim() if child.confirmation is not None else {},
        )
        return result

    def _delegate(
        self,
        parent_token: str,
        request: DelegationRequest,
        verified: list[VerifiedToken],
        time_left: TimeLeft | None,
    ) -> DelegateResult:
        _check_deadline(time_left)
        parent = self._verify(parent_token)
        verified.append(parent)
        if parent.kind is TokenKind.DELEGATED or request.validate_only:
            # A read of the parent's state: a delegated parent is refused either way, as unknown or
            # revoked, or else by the policy because it cannot delegate (rule 4, its one home), once
            # this read has found our own record of it; and validate_only must write nothing. An
            # upstream parent is judged by the mint below.
            self._active_record(parent)
        try:
            decision = self._policy.decide(parent, request)
            if request.audience is not None:
                decision = narrow(decision, request.scopes, request.audience)
            confirmation = child_confirmation(parent.confirmation, request.proof, request.bind_to_jkt)
            now = self._clock.now()
            expires_at = self._lifetimes.child_expiry(now, parent.expires_at, request.lifetime_seconds)
        except DelegationError:
            # A refused request pays one read, so a revoked parent is told it is not valid whatever
            # else is wrong with the request (rule 2 comes before the scope rules).
            if parent.kind is TokenKind.UPSTREAM and not request.validate_only:
                self._active_record(parent)
            raise
        child = ChildToken(
            token_id=self._token_ids(),
            chain_id=parent.chain_id,
            parent_token_id=parent.token_id,
            issuer=self._issuer,
            subject=parent.subject,
            audiences=decision.audiences,
            client_id=request.client_id,
            actor_client_id=parent.client_id,
            scopes=decision.granted,
            bearer=parent.bearer,
            issued_at=now,
            expires_at=expires_at,
            confirmation=confirmation,
        )
        if request.validate_only:
            return DelegateResult(child, None, decision.dropped)
        _check_deadline(time_left)
        # Record first, sign second: a crash in between leaves a record of a token nobody holds,
        # never a token the service cannot revoke. A caller whose deadline ran out while the store
        # answered gets nothing signed either (the same record of a token nobody holds).
        self._mint(record_of(parent), child)
        _check_deadline(time_left)
        return DelegateResult(child, self._signer.sign(child), decision.dropped)

    def _mint(self, root: TokenRecord, child: ChildToken) -> None:
        """Record ``child`` in the one store step that also reads whether its root is active.

        The store writes only for an active root; the domain's rule, applied to what that step read,
        decides what the caller is told (a revoked parent gets the same refusal as on any other path).
        """
        outcome = self._tokens.mint(root, record_child(child, root))
        if outcome.recorded and root_is_active(root, outcome.snapshot, self._clock.now()):
            return
        # Both must hold: the store wrote the child (nothing unrecorded is signed) and the domain's rule,
        # by the service's clock, finds the root active. The reason is for the log only.
        state = evaluate(root, outcome.snapshot, self._clock.now())
        if state is not TokenState.ACTIVE:
            raise ParentRejected(f"parent is {state.value}")
        # Active by the service's clock, not by the store's (an expiry within the clock skew), or a
        # stored root that is not this token.
        raise ParentRejected("parent is not active in the token store")

    def introspect(self, raw_token: str) -> Introspection:
        """RFC 7662: the token's claims when it is active, nothing otherwise.

        An unverifiable token is simply inactive; an unreachable store is an error (fail closed).
        """
        try:
            token = self._verify(raw_token)
        except ParentRejected:
            return Introspection(None)
        state = evaluate(record_of(token), self._tokens.snapshot(record_of(token)), self._clock.now())
        return Introspection(token if state is TokenState.ACTIVE else None)

    def revoke(self, raw_token: str, caller: str = "") -> None:
        """RFC 7009: revoke the presented token; revoking an upstream token revokes its whole chain.

        A token that does not verify is ignored (the answer is the same, as the RFC asks).
        """
        try:
            token = self._verifier.verify(raw_token)
        except ParentRejected as refused:
            self._audit.record(
                "revoke ignored",
                event="revoke",
                outcome="ignored",
                reason=refused.reason.identifier,
                caller=caller,
                actor="holder",
                detail=refused.detail,
            )
            return
        now = self._clock.now()
        if token.kind is TokenKind.UPSTREAM:
            event = self._revocations.revoke_chain(token.chain_id, token.expires_at, now)
        else:
            event = self._revocations.revoke_token(token.chain_id, token.token_id, token.expires_at, now)
        self._audit_revocation(event, caller, "holder")

    def authenticate_caller(self, raw_token: str) -> VerifiedToken:
        """The verified, active upstream token a caller presents as its own credential (bearer JWT).

        Only a trusted issuer's token counts, and only while it is active (not expired, not revoked by
        chain, subject or client): the service's own children are for the APIs downstream, never a
        credential for calling the service. Raises :class:`ParentRejected` otherwise.
        """
        token = self._verify(raw_token)
        if token.kind is not TokenKind.UPSTREAM:
            raise ParentRejected("a delegated token is not a caller credential")
        self._active_record(token)
        return token

    def jwks(self) -> Mapping[str, object]:
        """The public keys that verify child tokens."""
        return self._signer.jwks()

    # -- DelegationAdminService -------------------------------------------------------------------

    def revoke_chain(
        self,
        chain_id: str,
        token_id: str = "",
        dry_run: bool = False,
        justification: str = "",
        caller: str = "",
    ) -> BlastRadius:
        """Revoke a chain, or one token of it with everything minted from it; report the blast radius.

        A whole chain costs the same whatever its size (Vault's lesson): its marker is written first,
        then the radius is read from constant-cost counts. It counts the chain's tokens not yet expired,
        including any revoked one by one before (telling those apart would mean reading every record),
        and is zero when the chain was already revoked. One token of a chain is judged from its record.
        """
        with self._operator_action("revoke_chain", caller, chain_id=chain_id, token_id=token_id):
            if not chain_id:
                raise InvalidRequest(
                    violations=[Violation("chain_id", "", Reason.INVALID_REQUEST, "chain_id is required")]
                )
            now = self._clock.now()
            if token_id:
                target = self._revocations.record(chain_id, token_id)
                if target is None:
                    raise ChainNotFound(message="no such token in the chain")
                if target.kind is TokenKind.DELEGATED:
                    return self._revoke_one_token(target, dry_run, justification, caller, now)
            outcome = self._revocations.revoke_known_chain(chain_id, now, dry_run=dry_run)
            if outcome is None:
                raise ChainNotFound()
            newly_revoked = not outcome.already_revoked
            radius = BlastRadius(
                outcome.unexpired_token_count if newly_revoked else 0,
                outcome.client_ids if newly_revoked else (),
                dry_run,
                None if dry_run else now,
            )
            if outcome.event is None:
                self._audit_dry_run(chain_id, token_id, caller, radius)
            else:
                self._audit_revocation(
                    outcome.event, caller, "operator", justification, radius.revoked_token_count
                )
            return radius

    def _revoke_one_token(
        self, target: TokenRecord, dry_run: bool, justification: str, caller: str, now: int
    ) -> BlastRadius:
        """Revoke one child of a chain (nothing is minted from a child): the radius is that token."""
        live = evaluate(target, self._tokens.snapshot(target), now) is TokenState.ACTIVE
        radius = BlastRadius(
            1 if live else 0,
            (target.client_id,) if live and target.client_id else (),
            dry_run,
            None if dry_run else now,
        )
        if dry_run:
            self._audit_dry_run(target.chain_id, target.token_id, caller, radius)
            return radius
        event = self._revocations.revoke_token(target.chain_id, target.token_id, target.expires_at, now)
        self._audit_revocation(event, caller, "operator", justification, radius.revoked_token_count)
        return radius

    def _audit_dry_run(self, chain_id: str, token_id: str, caller: str, radius: BlastRadius) -> None:
        self._audit.record(
            "revoke_chain dry run",
            event="revoke_chain",
            outcome="dry_run",
            chain_id=chain_id,
            caller=caller,
            token_id=token_id,
            revoked_token_count=radius.revoked_token_count,
        )

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

    def get_chain(self, chain_id: str, caller: str = "") -> ChainView:
        """The tokens of a chain with their states: the root and the children that expire last, at most
        :data:`CHAIN_VIEW_LIMIT` in all, so that no view grows with the chain."""
        with self._operator_action("get_chain", caller, chain_id=chain_id):
            chain = self._chains.chain(chain_id, CHAIN_VIEW_LIMIT) if chain_id else None
            if chain is None:
                raise ChainNotFound()
        self._audit.record("get_chain", event="get_chain", outcome="viewed", chain_id=chain_id, caller=caller)
        return ChainView(chain_id, chain.chain_revoked, tuple(chain.states(self._clock.now())))

    def ready(self) -> bool:
        """Whether the store answers (for health checks)."""
        return self._health.ping()

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
        snapshot = self._tokens.snapshot(expected)
        state = evaluate(expected, snapshot, self._clock.now())
        if state is not TokenState.ACTIVE:
            raise ParentRejected(f"parent is {state.value}")
        return snapshot.record or expected

    def _revoke_horizon(self, key: HorizonKey, field: str, justification: str, caller: str) -> int:
        with self._operator_action(f"revoke_{key.kind.value}", caller, **{field: key.value}):
            if not key.value:
                raise InvalidRequest(
                    violations=[Violation(field, "", Reason.INVALID_REQUEST, f"{field} is required")]
                )
            now = self._clock.now()
            event = self._revocations.revoke_horizon(key, now, now)
        self._audit_revocation(event, caller, "operator", justification)
        return event.revoked_at  # the horizon in force: a later one may already have been set

    def _audit_revocation(
        self,
        event: RevocationEvent,
        caller: str,
        actor: str,
        justification: str = "",
        count: int | None = None,
    ) -> None:
        self._audit.record(
            "revoke",
            event="revoke",
            outcome="revoked",
            jti=event.token_id,
            chain_id=event.chain_id,
            client_id=event.client_id,
            caller=caller,
            kind=event.kind,
            subject=event.subject,
            actor=actor,
            justification=justification,
            revoked_token_count=count,
            cursor=event.cursor,
        )

    @contextlib.contextmanager
    def _operator_action(self, action: str, caller: str, **facts: str) -> Iterator[None]:
        """Audit an operator action that is refused or fails (success is audited by the action itself)."""
        try:
            yield
        except DelegationError as refused:
            self._audit.record(
                f"{action} {_outcome(refused)}",
                event=action,
                outcome=_outcome(refused),
                reason=refused.reason.identifier,
                caller=caller,
                **facts,
            )
            raise


def _check_deadline(time_left: TimeLeft | None) -> None:
    """Refuse to go on when the caller's deadline leaves no time to mint."""
    remaining = time_left() if time_left is not None else None
    if remaining is not None and remaining < MINT_MARGIN_SECONDS:
        raise DeadlineTooShort()


def _outcome(refused: DelegationError) -> str:
    """``error`` when the service could not decide (store down, deadline), ``denied`` otherwise."""
    return "error" if refused.reason in (Reason.STORE_UNAVAILABLE, Reason.DEADLINE_TOO_SHORT) else "denied"
