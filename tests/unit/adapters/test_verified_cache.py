"""The verified-token cache: hits only for the exact same token, never past exp, bounded, no failures."""

from __future__ import annotations

import pytest

from delegation_service.adapters.verified_cache import CachingVerifier
from delegation_service.domain.errors import ParentRejected
from delegation_service.domain.scopes import Bearer, BearerType
from delegation_service.domain.tokens import TokenKind, VerifiedToken


class Clock:
    def __init__(self, now: int) -> None:
        self.value = now

    def now(self) -> int:
        return self.value


class CountingVerifier:
    """Accepts tokens named ``good-<exp>``; counts how often it is asked."""

    def __init__(self) -> None:
        self.calls = 0

    def verify(self, raw_token: str) -> VerifiedToken:
        self.calls += 1
        if not raw_token.startswith("good-"):
            raise ParentRejected("bad token")
        expires_at = int(raw_token.split("-")[1])
        return VerifiedToken(
            kind=TokenKind.UPSTREAM,
            token_id=raw_token,
            chain_id="c",
            issuer="i",
            subject="s",
            client_id="",
            audiences=(),
            scopes=(),
            bearer=Bearer(BearerType.PERSON, "s"),
            issued_at=0,
            expires_at=expires_at,
        )


def test_the_same_token_is_verified_once_while_unexpired() -> None:
    inner, clock = CountingVerifier(), Clock(100)
    cache = CachingVerifier(inner, clock, max_entries=10)
    assert cache.verify("good-200") == cache.verify("good-200")
    assert inner.calls == 1


def test_an_expired_entry_is_verified_again() -> None:
    inner, clock = CountingVerifier(), Clock(100)
    cache = CachingVerifier(inner, clock, max_entries=10)
    cache.verify("good-200")
    clock.value = 200
    cache.verify("good-200")
    assert inner.calls == 2


def test_failures_are_never_cached() -> None:
    inner = CountingVerifier()
    cache = CachingVerifier(inner, Clock(100), max_entries=10)
    for _ in range(3):
        with pytest.raises(ParentRejected):
            cache.verify("bad")
    assert inner.calls == 3 and len(cache) == 0


def test_a_token_differing_in_one_character_is_a_miss() -> None:
    inner = CountingVerifier()
    cache = CachingVerifier(inner, Clock(100), max_entries=10)
    cache.verify("good-200")
    cache.verify("good-201")
    assert inner.calls == 2


def test_the_cache_is_bounded_and_evicts_the_least_recently_used() -> None:
    inner = CountingVerifier()
    cache = CachingVerifier(inner, Clock(100), max_entries=2)
    cache.verify("good-201")
    cache.verify("good-202")
    cache.verify("good-201")  # refreshes 201
    cache.verify("good-203")  # evicts 202
    assert len(cache) == 2
    cache.verify("good-201")
    assert inner.calls == 3
    cache.verify("good-202")
    assert inner.calls == 4


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        CachingVerifier(CountingVerifier(), Clock(0), max_entries=0)
