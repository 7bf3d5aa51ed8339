"""Child lifetimes (SPEC §3.10), chain ids and the child's claims (SPEC §4)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from delegation_service.domain.errors import DelegationError, LifetimeRefused, Reason
from delegation_service.domain.scopes import Bearer, BearerType, parse_scope
from delegation_service.domain.tokens import (
    ChildToken,
    LifetimePolicy,
    root_chain_id,
    token_fingerprint,
)

NOW = 1_700_000_000
LIFETIMES = LifetimePolicy(default_seconds=300, maximum_seconds=3600)


# --- LifetimePolicy ---


@pytest.mark.parametrize(
    ("parent_remaining", "requested", "expected_lifetime"),
    [
        (10_000, None, 300),  # the default
        (100, None, 100),  # the default, cut to the parent (only an explicit request is refused)
        (10_000, 60, 60),
        (10_000, 3600, 3600),  # exactly the maximum
        (10_000, 3601, 3600),  # capped by the maximum
        (100, 100, 100),  # exactly the parent's remaining life
        (1, 1, 1),
    ],
)
def test_child_expiry_is_the_minimum_of_wanted_parent_and_maximum(
    parent_remaining: int, requested: int | None, expected_lifetime: int
) -> None:
    assert LIFETIMES.child_expiry(NOW, NOW + parent_remaining, requested) == NOW + expected_lifetime


@pytest.mark.parametrize("requested", [101, 3600, 10**6, 2**31, 2**63, 2**64 + 1])
def test_requested_lifetime_outliving_the_parent_is_refused_not_cut(requested: int) -> None:
    with pytest.raises(LifetimeRefused) as caught:
        LIFETIMES.child_expiry(NOW, NOW + 100, requested)

    assert caught.value.reason is Reason.EXPIRES_AFTER_PARENT


@pytest.mark.parametrize("requested", [0, -1, -300, -(2**63)])
def test_zero_or_negative_lifetime_is_invalid(requested: int) -> None:
    with pytest.raises(LifetimeRefused) as caught:
        LIFETIMES.child_expiry(NOW, NOW + 10_000, requested)

    assert caught.value.reason is Reason.INVALID_LIFETIME


def test_lifetime_refusal_is_a_delegation_error() -> None:
    with pytest.raises(DelegationError):
        LIFETIMES.child_expiry(NOW, NOW + 10, 11)


@pytest.mark.parametrize(("default", "maximum"), [(0, 10), (-1, 10), (11, 10), (0, 0)])
def test_inconsistent_lifetime_policy_is_refused_at_start_up(default: int, maximum: int) -> None:
    with pytest.raises(ValueError, match="lifetimes"):
        LifetimePolicy(default_seconds=default, maximum_seconds=maximum)


@given(
    default=st.integers(1, 10**6),
    extra_maximum=st.integers(0, 10**6),
    now=st.integers(0, 2**40),
    parent_remaining=st.integers(-(10**6), 10**7),
    requested=st.one_of(st.none(), st.integers(-(10**7), 10**8), st.just(2**63)),
)
def test_child_never_outlives_its_parent_or_the_maximum(
    default: int, extra_maximum: int, now: int, parent_remaining: int, requested: int | None
) -> None:
    policy = LifetimePolicy(default_seconds=default, maximum_seconds=default + extra_maximum)
    parent_expires_at = now + parent_remaining

    if parent_remaining <= 0 or (
        requested is not None and (requested <= 0 or now + requested > parent_expires_at)
    ):
        with pytest.raises(LifetimeRefused) as caught:
            policy.child_expiry(now, parent_expires_at, requested)
        assert caught.value.reason is (
            Reason.EXPIRES_AFTER_PARENT
            if parent_remaining <= 0 or requested is None or requested > 0
            else Reason.INVALID_LIFETIME
        )
        return

    expires_at = policy.child_expiry(now, parent_expires_at, requested)
    assert now < expires_at <= parent_expires_at
    assert expires_at <= now + policy.maximum_seconds
    if requested is not None:
        assert expires_at <= now + requested


# --- Ids ---


def test_root_chain_id_is_stable() -> None:
    assert root_chain_id("https://issuer.example", "jti-1") == root_chain_id(
        "https://issuer.example", "jti-1"
    )


def test_root_chain_id_differs_per_issuer_and_token() -> None:
    ids = {
        root_chain_id("https://issuer.example", "jti-1"),
        root_chain_id("https://issuer.example", "jti-2"),
        root_chain_id("https://other.example", "jti-1"),
        # The separator keeps ("ab", "c") and ("a", "bc") apart.
        root_chain_id("https://issuer.exampleX", "jti-1"),
        root_chain_id("https://issuer.example", "Xjti-1"),
    }

    assert len(ids) == 5


@given(st.text(), st.text())
def test_root_chain_id_is_safe_inside_a_redis_hash_tag(issuer: str, token_id: str) -> None:
    chain_id = root_chain_id(issuer, token_id)

    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", chain_id)
    assert "{" not in chain_id
    assert "}" not in chain_id


def test_token_fingerprint_is_a_stable_hash_that_does_not_reveal_the_token() -> None:
    raw = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJl"

    fingerprint = token_fingerprint(raw)

    assert fingerprint == token_fingerprint(raw)
    assert fingerprint != token_fingerprint(raw + "x")
    assert re.fullmatch(r"sha256:[A-Za-z0-9_-]{43}", fingerprint)
    assert "eyJ" not in fingerprint


# --- ChildToken claims ---


def _child(audiences: tuple[str, ...] = ("warehouse",), bearer: Bearer | None = None) -> ChildToken:
    return ChildToken(
        token_id="child-jti",
        chain_id="chain-1",
        parent_token_id="parent-jti",
        issuer="https://delegation.example",
        subject="user-1",
        audiences=audiences,
        client_id="billing",
        actor_client_id="gateway",
        scopes=(
            parse_scope("Org.warehouse.items.r"),
            parse_scope("https://api.publiq.be/auth/uitpas"),
            parse_scope("warehouse.items.r"),
        ),
        bearer=bearer or Bearer(BearerType.ORGANIZATION, "b1475f65-236c-58b8-96e1-e1778b43beb7"),
        issued_at=NOW,
        expires_at=NOW + 300,
    )


def test_child_claims_hold_every_rfc_9068_claim_and_the_delegation_facts() -> None:
    claims = _child().claims()

    assert claims == {
        "iss": "https://delegation.example",
        "sub": "user-1",
        "aud": "warehouse",
        "client_id": "billing",
        "scope": "warehouse.items.r https://api.publiq.be/auth/uitpas",
        "iat": NOW,
        "nbf": NOW,
        "exp": NOW + 300,
        "jti": "child-jti",
        "act": {"sub": "gateway"},
        "bearer": {"type": "Org", "id": "b1475f65-236c-58b8-96e1-e1778b43beb7"},
        "parent_jti": "parent-jti",
        "chain_id": "chain-1",
    }


def test_scope_claim_never_carries_a_bearer_prefix() -> None:
    child = _child()

    assert child.scope_claim == "warehouse.items.r https://api.publiq.be/auth/uitpas"
    assert "Org" not in child.scope_claim


def test_several_audiences_become_a_list() -> None:
    assert _child(audiences=("warehouse", "directory")).claims()["aud"] == ["warehouse", "directory"]


def test_bearer_without_id_is_claimed_by_type_only() -> None:
    assert _child(bearer=Bearer(BearerType.PERSON)).claims()["bearer"] == {"type": "Per"}
