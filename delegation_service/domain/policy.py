"""The delegation policy (SPEC §3 rules 3 to 7 and 9): which scopes a child may get from a parent.

A pure function of the catalog, the verified parent, the target client and the request. Revocation
(rule 2) and lifetimes (rule 10) are checked by the use case, which owns the store and the clock.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from delegation_service.domain.binding import NO_PROOF, PossessionProof
from delegation_service.domain.catalog import Catalog, Client
from delegation_service.domain.errors import (
    DelegationError,
    InvalidRequest,
    MissingDelegationScope,
    NoGrantableScopes,
    ParentCannotDelegate,
    ParentWithoutClient,
    Reason,
    ScopesRefused,
    UnknownClient,
    Violation,
)
from delegation_service.domain.scopes import (
    Bearer,
    Permission,
    Scope,
    ScopeSyntaxError,
    StructuredScope,
    UrlScope,
    parse_scope,
    split_scopes,
)
from delegation_service.domain.tokens import TokenKind, VerifiedToken

# Refusals that ``allow_partial`` may drop (SPEC §3.9); anything else still fails the call.
DROPPABLE = frozenset(
    {
        Reason.UNAVAILABLE_SCOPE_FOR_BEARER_TYPE,
        Reason.SCOPE_WAS_NOT_GRANTED_IN_PARENT,
        Reason.SCOPE_NOT_ALLOWED_FOR_CLIENT,
    }
)

_DESCRIPTIONS = {
    Reason.INVALID_SCOPE_STRUCTURE: "the scope does not match the scope grammar",
    Reason.INVALID_AUDIENCE: "the audience does not exist",
    Reason.INVALID_SCOPE_NAME: "the scope name does not exist for the audience",
    Reason.DELEGATION_ACCESS_TOKEN_CANNOT_DELEGATE: "the delegation scope cannot be granted to a child",
    Reason.DIFFERENT_BEARER_TYPES: "the scope names a bearer other than the parent's",
    Reason.UNAVAILABLE_SCOPE_FOR_BEARER_TYPE: "the scope is not available for the bearer type",
    Reason.SCOPE_WAS_NOT_GRANTED_IN_PARENT: "the scope was not granted in the parent token",
    Reason.SCOPE_NOT_ALLOWED_FOR_CLIENT: "the target client may not hold the scope",
}

DECISION_CACHE_SIZE = 4096
"""Policy decisions kept (least recently used dropped first) by :class:`DelegationPolicy`."""
MAX_CACHED_REQUEST_CHARS = 4096
"""A decision is cached only when the parent's scopes and the requested scopes add up to at most this
many characters, so the cache holds at most about ``DECISION_CACHE_SIZE`` times that much text."""


@dataclass(frozen=True)
class DelegationRequest:
    """What the holder of a parent token asks for, decoded from the transport (scopes still raw, possibly
    space-separated); the policy reads ``client_id``, ``scopes`` and ``allow_partial``."""

    client_id: str
    scopes: Sequence[str] = ()
    allow_partial: bool = False
    lifetime_seconds: int | None = None
    validate_only: bool = False
    audience: str | None = None
    """Limit the child to this one audience (resource server), inside what its scopes allow."""
    proof: PossessionProof = NO_PROOF
    """The keys the transport proved the caller holds (a DPoP proof, a client certificate)."""
    bind_to_jkt: str | None = None
    """Bind the child to this DPoP key (the subsystem's) instead of the parent's or the proof's."""


@dataclass(frozen=True)
class Decision:
    """What the child would get, and each requested scope that was dropped (with ``allow_partial``)."""

    granted: tuple[Scope, ...]
    dropped: tuple[Violation, ...]

    @functools.cached_property
    def audiences(self) -> tuple[str, ...]:
        """The child's ``aud``: the apps its scopes are for (URL-form scopes name their API), sorted.

        Built once per decision, and a cached decision serves many children."""
        return tuple(sorted({s.audience if isinstance(s, StructuredScope) else s.url for s in self.granted}))


class _Question(NamedTuple):
    """Everything a decision depends on besides the policy itself: the decision cache's key."""

    kind: TokenKind
    parent_scopes: tuple[str, ...]
    bearer: Bearer
    names_its_client: bool
    client_id: str
    scopes: tuple[str, ...]
    allow_partial: bool


@dataclass(frozen=True)
class DelegationPolicy:
    """The rules, configured once: the catalog, whether scopes must be explicit, the scope count cap.

    A decision is a pure function of the (immutable) catalog, these settings, the parent's kind, scopes
    and bearer, the target client, the requested scope entries and ``allow_partial``, so the last
    ``cache_size`` decisions are kept by exactly those inputs (a gateway asks the same question for
    every child of a parent). A cached refusal is raised again as a fresh, equivalent exception.
    """

    catalog: Catalog
    require_explicit_scopes: bool = False
    max_scopes: int = 100
    cache_size: int = DECISION_CACHE_SIZE
    _cached: functools._lru_cache_wrapper[Decision | DelegationError] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "_cached", functools.lru_cache(maxsize=self.cache_size)(self._outcome))

    def decide(self, parent: VerifiedToken, request: DelegationRequest) -> Decision:
        """Decide the child's scopes, or raise the :class:`DelegationError` that explains the refusal."""
        question = _Question(
            parent.kind,
            tuple(parent.scopes),
            parent.bearer,
            bool(parent.client_id),
            request.client_id,
            tuple(request.scopes),
            request.allow_partial,
        )
        if sum(map(len, question.parent_scopes)) + sum(map(len, question.scopes)) > MAX_CACHED_REQUEST_CHARS:
            return self._decide(question)
        outcome = self._cached(question)
        if isinstance(outcome, DelegationError):
            raise _fresh(outcome)
        return outcome

    def cache_info(self) -> functools._CacheInfo:
        """Hits, misses and size of the decision cache."""
        return self._cached.cache_info()

    def _outcome(self, question: _Question) -> Decision | DelegationError:
        """The decision, or the refusal as a value (kept without its traceback), for the cache."""
        try:
            return self._decide(question)
        except DelegationError as refused:
            return _fresh(refused)

    def _decide(self, question: _Question) -> Decision:
        kind, parent_scopes, bearer, names_its_client, client_id, scopes, allow_partial = question
        if kind is TokenKind.DELEGATED:
            # Rule 4, its one home. The use case asks only once it has found the service's own record
            # of a delegated parent (an unknown or revoked one is refused as such before).
            raise ParentCannotDelegate()
        grant = _parse_grant(parent_scopes)
        # The parent's scope must cover the delegation scope, not the reverse: `directory.delegations.r`
        # does not hold `directory.delegations.rw`.
        if not any(held.covers(self.catalog.delegation_scope) for held in grant):
            raise MissingDelegationScope()
        if not names_its_client:
            # The child's act.sub would be empty, and the service's own verifier refuses such a token:
            # its holder could neither use nor revoke it (SPEC §5).
            raise ParentWithoutClient()
        if not client_id:
            raise InvalidRequest(
                violations=[Violation("client_id", "", Reason.INVALID_REQUEST, "client_id is required")]
            )
        client = self.catalog.clients.get(client_id)
        if client is None:
            raise UnknownClient(
                violations=[Violation("client_id", client_id, Reason.UNKNOWN_CLIENT, "no such client")]
            )
        requested = split_scopes(scopes)
        if len(requested) > self.max_scopes:
            raise InvalidRequest(Reason.TOO_MANY_SCOPES, f"at most {self.max_scopes} scopes may be requested")
        if not requested:
            if self.require_explicit_scopes:
                raise InvalidRequest(Reason.SCOPES_REQUIRED, "scopes must be requested explicitly")
            return Decision(self._everything_for(client, bearer, grant), ())
        return self._explicit(client, bearer, grant, requested, allow_partial)

    def _explicit(
        self,
        client: Client,
        bearer: Bearer,
        grant: Sequence[Scope],
        requested: Sequence[tuple[int, str]],
        allow_partial: bool,
    ) -> Decision:
        granted: dict[Scope, None] = {}
        violations: list[Violation] = []
        for index, text in requested:
            outcome = self._check(client, bearer, grant, text)
            if isinstance(outcome, Reason):
                violations.append(Violation(f"scopes[{index}]", text, outcome, _DESCRIPTIONS[outcome]))
            else:
                granted.setdefault(outcome, None)
        fatal = [v for v in violations if not (allow_partial and v.reason in DROPPABLE)]
        if fatal or not granted:
            raise ScopesRefused(violations)  # every failing scope, even the droppable ones
        return Decision(tuple(granted), tuple(violations))

    def _check(self, client: Client, bearer: Bearer, grant: Sequence[Scope], text: str) -> Scope | Reason:
        """The granted form of one requested scope, or the first reason it fails."""
        try:
            scope = parse_scope(text)
        except ScopeSyntaxError:
            return Reason.INVALID_SCOPE_STRUCTURE
        if self.catalog.is_delegation_scope(scope):
            return Reason.DELEGATION_ACCESS_TOKEN_CANNOT_DELEGATE
        if isinstance(scope, UrlScope):
            if scope.url not in self.catalog.url_scopes:
                return Reason.INVALID_SCOPE_NAME
        else:
            if scope.audience not in self.catalog.audiences:
                return Reason.INVALID_AUDIENCE
            if scope.key not in self.catalog.scopes:
                return Reason.INVALID_SCOPE_NAME
            if scope.bearer_type is not bearer.type or (
                scope.bearer is not None and scope.bearer.id not in (None, bearer.id)
            ):
                return Reason.DIFFERENT_BEARER_TYPES
            if bearer.type not in self.catalog.bearer_types(scope):
                return Reason.UNAVAILABLE_SCOPE_FOR_BEARER_TYPE
            scope = scope.without_bearer()
        if not any(held.covers(scope) for held in grant):
            return Reason.SCOPE_WAS_NOT_GRANTED_IN_PARENT
        if not client.may_hold(scope):
            return Reason.SCOPE_NOT_ALLOWED_FOR_CLIENT
        return scope

    def _everything_for(self, client: Client, bearer: Bearer, grant: Sequence[Scope]) -> tuple[Scope, ...]:
        """Rule 7: every parent scope the client may hold (at the highest permission it may hold)."""
        granted: dict[Scope, None] = {}
        for held in grant:
            if self.catalog.is_delegation_scope(held):
                continue
            if isinstance(held, UrlScope):
                if held.url in self.catalog.url_scopes and client.may_hold(held):
                    granted.setdefault(held, None)
                continue
            if bearer.type not in self.catalog.bearer_types(held):
                continue
            for permission in (held.permission, Permission.READ):
                candidate = held.with_permission(permission)
                if held.permission.covers(permission) and client.may_hold(candidate):
                    granted.setdefault(candidate, None)
                    break
        if not granted:
            raise NoGrantableScopes()
        return tuple(granted)


def _parse_grant(scopes: Sequence[str]) -> list[Scope]:
    """The parent's grant: its scopes that parse, without bearer parts; others are ignored."""
    grant: list[Scope] = []
    for text in scopes:
        try:
            scope = parse_scope(text)
        except ScopeSyntaxError:
            continue
        grant.append(scope.without_bearer() if isinstance(scope, StructuredScope) else scope)
    return grant


def _fresh(refused: DelegationError) -> DelegationError:
    """A new exception of the same class with the same state (reason, message, violations, detail),
    and no traceback, cause or context: what a cache keeps, and what it raises on each hit."""
    cls = type(refused)
    copy = cls.__new__(cls)
    copy.__dict__.update(refused.__dict__)
    copy.args = refused.args
    return copy
