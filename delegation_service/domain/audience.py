"""Audience narrowing: a child limited to one resource server inside what the parent allows.

A child's ``aud`` is normally every audience its scopes are for. A caller may ask for one audience
instead (RFC 8707 ``resource`` over HTTP, ``audience`` on gRPC): the child then holds only scopes of
that audience and names only it, so a resource server of another audience refuses it (the edge
verifier checks ``aud``). The audience must be one of those the granted scopes are for: narrowing never
adds an audience the parent's scopes do not reach.
"""

from __future__ import annotations

from collections.abc import Sequence

from delegation_service.domain.errors import AudienceNotGranted, Reason, ScopesRefused, Violation
from delegation_service.domain.policy import Decision
from delegation_service.domain.scopes import (
    Scope,
    ScopeSyntaxError,
    StructuredScope,
    parse_scope,
    split_scopes,
)


def audience_of(scope: Scope) -> str:
    """The resource server a scope is for: its audience, or a URL scope's URL (its API)."""
    return scope.audience if isinstance(scope, StructuredScope) else scope.url


def narrow(decision: Decision, requested: Sequence[str], audience: str) -> Decision:
    """``decision`` limited to ``audience``; refuse when that leaves nothing or contradicts the request.

    With scopes requested, each one for another audience is a violation (``SCOPE_OUTSIDE_AUDIENCE``, at
    its index): the caller asked for two things that cannot both hold. With none requested (rule 7:
    "everything the client may hold"), only the scopes for ``audience`` are kept. Either way an audience
    none of the granted scopes is for is :class:`AudienceNotGranted`.
    """
    violations = []
    for index, text in split_scopes(requested):
        try:
            scope = parse_scope(text)
        except ScopeSyntaxError:
            continue  # already refused by the policy; never reached with a decision in hand
        if audience_of(scope) != audience:
            violations.append(
                Violation(
                    f"scopes[{index}]",
                    text,
                    Reason.SCOPE_OUTSIDE_AUDIENCE,
                    "the scope is not for the requested audience",
                )
            )
    if violations:
        raise ScopesRefused(violations)
    kept = tuple(scope for scope in decision.granted if audience_of(scope) == audience)
    if not kept:
        raise AudienceNotGranted()
    return Decision(kept, decision.dropped)
