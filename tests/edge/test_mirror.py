"""The edge's revocation mirror and staleness clock: pure logic, no gRPC."""

from __future__ import annotations

from typing import Any

import pytest

from delegation_service.domain.ports import RevocationEvent
from delegation_service.domain.revocation import RevocationKind, TokenState
from delegation_service.domain.scopes import Bearer, BearerType
from delegation_service.domain.tokens import TokenKind, VerifiedToken
from delegation_service.edge.mirror import FeedClock, RevocationMirror

NOW = 1_000_000


def event(kind: RevocationKind, chain_id: str = "", token_id: str = "", **fields: Any) -> RevocationEvent:
    """A revocation as the stream delivers it (the cursor plays no part in the mirror)."""
    return RevocationEvent("", kind, chain_id, token_id, **fields)


def child(issued_at: int = NOW - 10, **overrides: object) -> VerifiedToken:
    fields: dict[str, object] = {
        "kind": TokenKind.DELEGATED,
        "token_id": "child-1",
        "chain_id": "chain-1",
        "issuer": "https://delegation.test.invalid",
        "subject": "alice",
        "client_id": "billing",
        "audiences": ("warehouse",),
        "scopes": ("warehouse.items.r",),
        "bearer": Bearer(BearerType.PERSON, "alice"),
        "issued_at": issued_at,
        "expires_at": NOW + 600,
        "parent_token_id": "root-1",
        "actor_client_id": "gateway",
    }
    fields.update(overrides)
    return VerifiedToken(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("revocation", "state"),
    [
        (
            event(RevocationKind.TOKEN, "chain-1", "child-1", expires_at=NOW + 60),
            TokenState.REVOKED,
        ),
        (
            event(RevocationKind.TOKEN, "chain-1", "child-2", expires_at=NOW + 60),
            TokenState.ACTIVE,
        ),
        (event(RevocationKind.CHAIN, "chain-1", expires_at=NOW + 60), TokenState.REVOKED),
        (event(RevocationKind.CHAIN, "chain-2", expires_at=NOW + 60), TokenState.ACTIVE),
        # Horizons revoke what was issued at or before them, never after.
        (
            event(RevocationKind.SUBJECT, subject="alice", revoked_at=NOW - 10),
            TokenState.REVOKED,
        ),
        (
            event(RevocationKind.SUBJECT, subject="alice", revoked_at=NOW - 11),
            TokenState.ACTIVE,
        ),
        (event(RevocationKind.SUBJECT, subject="bob", revoked_at=NOW), TokenState.ACTIVE),
        (event(RevocationKind.CLIENT, client_id="billing", revoked_at=NOW), TokenState.REVOKED),
        # The client that delegated (act.sub, the root's client) revokes its children too.
        (event(RevocationKind.CLIENT, client_id="gateway", revoked_at=NOW), TokenState.REVOKED),
        (event(RevocationKind.CLIENT, client_id="other", revoked_at=NOW), TokenState.ACTIVE),
    ],
)
def test_a_child_is_judged_by_the_domain_rule(revocation: RevocationEvent, state: TokenState) -> None:
    mirror = RevocationMirror()
    mirror.apply(revocation)
    assert mirror.state(child(), NOW) is state


def test_an_expired_child_is_expired_whatever_the_mirror_holds() -> None:
    assert RevocationMirror().state(child(expires_at=NOW), NOW) is TokenState.EXPIRED


def test_a_horizon_never_moves_back() -> None:
    mirror = RevocationMirror()
    mirror.apply(event(RevocationKind.SUBJECT, subject="alice", revoked_at=NOW, expires_at=NOW + 60))
    mirror.apply(event(RevocationKind.SUBJECT, subject="alice", revoked_at=NOW - 100, expires_at=NOW + 1))
    assert mirror.state(child(issued_at=NOW - 50), NOW) is TokenState.REVOKED
    assert mirror.prune(NOW + 30) == 0  # the later horizon's own expiry is kept


def test_entries_go_when_every_token_they_cover_has_expired() -> None:
    mirror = RevocationMirror()
    mirror.apply(event(RevocationKind.CHAIN, "chain-1", expires_at=NOW + 5))
    mirror.apply(event(RevocationKind.TOKEN, "chain-2", "t", expires_at=NOW + 50))
    mirror.apply(event(RevocationKind.CLIENT, client_id="billing", revoked_at=NOW, expires_at=NOW + 5))
    assert len(mirror) == 3
    assert mirror.prune(NOW + 5) == 2
    assert len(mirror) == 1


def test_an_entry_without_an_expiry_is_never_forgotten() -> None:
    mirror = RevocationMirror()
    mirror.apply(event(RevocationKind.CHAIN, "chain-1", expires_at=0))
    assert mirror.prune(NOW * 2) == 0
    assert mirror.state(child(), NOW) is TokenState.REVOKED


def test_a_resync_merges_a_replayed_revocation_without_shortening_it() -> None:
    mirror = RevocationMirror()
    mirror.apply(event(RevocationKind.CHAIN, "chain-1", expires_at=NOW + 100))
    mirror.apply(event(RevocationKind.CHAIN, "chain-1", expires_at=NOW + 10))
    assert mirror.prune(NOW + 50) == 0


def test_staleness_is_infinite_until_the_feed_is_first_current() -> None:
    clock = FeedClock()
    assert clock.staleness(5.0) == float("inf")
    clock.mark_current(5.0)
    clock.mark_current(4.0)  # an older mark never makes the feed look staler
    assert clock.staleness(7.5) == 2.5
