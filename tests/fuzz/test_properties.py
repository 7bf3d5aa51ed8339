"""Properties of delegation end to end through the use case, with real keys, signer and verifier.

Whatever the parent holds and whatever is asked, a minted child is a subset of its parent: every scope
is covered by a parent scope, the delegation scope is never in it, it expires no later than the parent,
and it keeps the parent's bearer and chain. Anything else ends in a ``DelegationError``.
(The policy alone has its own properties in tests/unit/domain/test_policy.py.)
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

from hypothesis import event, given
from hypothesis import strategies as st

from delegation_service.adapters.clock import SystemClock
from delegation_service.adapters.jwt_codec import IssuerRules, JwtSigner, JwtVerifier, TrustedIssuer
from delegation_service.adapters.keys import KeySet, load_jwks
from delegation_service.adapters.memory_registry import MemoryRegistry
from delegation_service.app import load_catalog
from delegation_service.audit import AuditLog
from delegation_service.dev import demo_catalog_path
from delegation_service.domain.catalog import Catalog
from delegation_service.domain.errors import DelegationError
from delegation_service.domain.policy import DelegationPolicy, DelegationRequest
from delegation_service.domain.scopes import ScopeSyntaxError, parse_scope
from delegation_service.domain.tokens import LifetimePolicy, TokenKind
from delegation_service.service import DelegationService
from tests.fuzz.targets import (
    AUDIENCE,
    FUZZ_SETTINGS,
    OWN_ISSUER,
    SCOPE_WORDS,
    UPSTREAM_ISSUER,
    claims,
    world,
)
from tests.security.forge import signed

MAX_LIFETIME = 3600
_printable = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30)


@dataclass(frozen=True)
class Setup:
    service: DelegationService
    verifier: JwtVerifier
    catalog: Catalog


@functools.cache
def setup() -> Setup:
    w = world()
    trusted = TrustedIssuer(
        UPSTREAM_ISSUER, load_jwks({"keys": [dict(w.upstream.public_jwk)]}), IssuerRules(audience=AUDIENCE)
    )
    clock = SystemClock()
    verifier = JwtVerifier(OWN_ISSUER, KeySet(w.own), [trusted], leeway_seconds=30, clock=clock)
    catalog = load_catalog(demo_catalog_path())
    store = MemoryRegistry(clock, horizon_retention_seconds=90_000)
    service = DelegationService(
        issuer=OWN_ISSUER,
        verifier=verifier,
        signer=JwtSigner(KeySet(w.own)),
        tokens=store,
        revocations=store,
        chains=store,
        health=store,
        policy=DelegationPolicy(catalog),
        lifetimes=LifetimePolicy(900, MAX_LIFETIME),
        clock=clock,
        max_parent_age_seconds=86_400,
        audit=AuditLog(),
    )
    return Setup(service, verifier, catalog)


def covers(parent_scopes: list[str], child_scope: str) -> bool:
    held = []
    for text in parent_scopes:
        try:
            scope = parse_scope(text)
        except ScopeSyntaxError:
            continue
        held.append(scope)
    wanted = parse_scope(child_scope)
    return any(scope.covers(wanted) for scope in held)


@FUZZ_SETTINGS
@given(
    parent_scopes=st.lists(st.sampled_from(SCOPE_WORDS), max_size=6),
    parent_life=st.integers(1, 86_000),
    requested=st.lists(st.one_of(st.sampled_from(SCOPE_WORDS), _printable), max_size=5),
    lifetime=st.one_of(st.none(), st.integers(-10, 7200)),
    client_id=st.sampled_from(["billing", "search", "gateway"]),
    allow_partial=st.booleans(),
    organisation=st.booleans(),
)
def test_a_child_is_always_a_subset_of_its_parent(
    parent_scopes: list[str],
    parent_life: int,
    requested: list[str],
    lifetime: int | None,
    client_id: str,
    allow_partial: bool,
    organisation: bool,
) -> None:
    s, w = setup(), world()
    now = int(time.time())
    bearer = {"type": "Org", "id": "acme"} if organisation else {"type": "Per", "id": "alice"}
    parent_claims = claims(
        scope=" ".join(["directory.delegations.rw", *parent_scopes]),
        exp=now + parent_life,
        bearer=bearer,
    )
    token = signed({"alg": "ES256", "typ": "at+jwt", "kid": w.upstream.kid}, parent_claims, w.upstream)
    try:
        result = s.service.delegate(
            token,
            DelegationRequest(
                client_id, tuple(requested), lifetime_seconds=lifetime, allow_partial=allow_partial
            ),
        )
    except DelegationError as refused:
        event(f"refused: {refused.reason.identifier}")
        return
    event("minted")
    assert result.access_token is not None
    child = s.verifier.verify(result.access_token)
    parent = s.verifier.verify(token)
    assert child.kind is TokenKind.DELEGATED
    assert child.expires_at <= parent.expires_at
    assert child.expires_at <= child.issued_at + MAX_LIFETIME
    assert child.bearer == parent.bearer and child.chain_id == parent.chain_id
    assert child.client_id == client_id and child.actor_client_id == parent.client_id
    assert child.scopes
    for scope in child.scopes:
        assert scope != "directory.delegations.rw" and not scope.startswith("directory.delegations.")
        assert covers(list(parent.scopes), scope)
