"""Fixtures of the domain unit tests: a demo catalog and a factory of verified parent tokens.

Everything here is immutable, so the fixtures are session-scoped and safe to share with hypothesis tests.
No property pins ``max_examples``: the active Hypothesis profile decides (the default keeps the suite
fast; ``make fuzz`` raises it), and a count in a ``@settings`` decorator would override the profile.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from delegation_service.domain.catalog import Catalog
from delegation_service.domain.policy import DelegationPolicy
from delegation_service.domain.scopes import Bearer, BearerType
from delegation_service.domain.tokens import TokenKind, VerifiedToken

UITPAS = "https://api.publiq.be/auth/uitpas"
ORG_ID = "b1475f65-236c-58b8-96e1-e1778b43beb7"
PERSON_ID = "4d3c2b1a-0000-4000-8000-000000000001"

DEMO_CATALOG: dict[str, Any] = {
    "delegation_scope": "directory.delegations.rw",
    "url_scopes": [UITPAS, "https://api.publiq.be/auth/entry"],
    "audiences": {
        "directory": {
            "scopes": {
                "person": ["Per"],
                "machines": ["Org"],
                "delegations": ["Per", "Org"],
                "profile": ["Per", "Org"],
            }
        },
        "warehouse": {"scopes": {"items": ["Per", "Org"], "stock": ["Org"]}},
    },
    "clients": {
        # May hold the person scope only for reading, items at any permission, and a URL scope.
        "billing": {"scopes": ["directory.person.r", "warehouse.items.rw", UITPAS]},
        "inventory": {
            "scopes": [
                "warehouse.items.rw",
                "warehouse.stock.rw",
                "directory.machines.r",
                "directory.profile.rw",
            ]
        },
        "reader": {"scopes": ["directory.person.r", "directory.profile.r", "warehouse.items.r"]},
        # Even a client allowed the delegation scope never receives it in a child.
        "greedy": {"scopes": ["directory.delegations.rw", "directory.person.rw", "directory.profile.rw"]},
        "nothing": {"scopes": []},
    },
}

ParentFactory = Callable[..., VerifiedToken]


@pytest.fixture(scope="session")
def demo_catalog_data() -> Callable[[], dict[str, Any]]:
    """A factory of fresh, deep-copied demo catalog data that a test may corrupt freely."""
    return lambda: copy.deepcopy(DEMO_CATALOG)


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    """The demo catalog, built the way start-up builds it."""
    return Catalog.from_mapping(copy.deepcopy(DEMO_CATALOG))


@pytest.fixture(scope="session")
def policy(catalog: Catalog) -> DelegationPolicy:
    """The delegation policy with default settings over the demo catalog."""
    return DelegationPolicy(catalog)


@pytest.fixture(scope="session")
def make_parent() -> ParentFactory:
    """A factory of verified parent tokens: upstream, a person bearer, holding the delegation scope."""

    def build(
        scopes: Iterable[str] = ("directory.delegations.rw",),
        *,
        bearer: Bearer | None = None,
        kind: TokenKind = TokenKind.UPSTREAM,
        issued_at: int = 1_700_000_000,
        expires_at: int = 1_700_003_600,
    ) -> VerifiedToken:
        return VerifiedToken(
            kind=kind,
            token_id="parent-jti",
            chain_id="chain-1",
            issuer="https://issuer.example",
            subject="user-1",
            client_id="gateway",
            audiences=("directory",),
            scopes=tuple(scopes),
            bearer=bearer if bearer is not None else Bearer(BearerType.PERSON, PERSON_ID),
            issued_at=issued_at,
            expires_at=expires_at,
            parent_token_id="root-jti" if kind is TokenKind.DELEGATED else None,
            actor_client_id="gateway" if kind is TokenKind.DELEGATED else None,
        )

    return build
