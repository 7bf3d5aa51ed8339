"""The policy's decision cache and the scope parser's cache: hits, misses, bounds, and refusals."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from delegation_service.domain.catalog import Catalog
from delegation_service.domain.errors import (
    DelegationError,
    MissingDelegationScope,
    ParentCannotDelegate,
    Reason,
    ScopesRefused,
    UnknownClient,
)
from delegation_service.domain.policy import MAX_CACHED_REQUEST_CHARS, DelegationPolicy, DelegationRequest
from delegation_service.domain.scopes import (
    PARSE_CACHE_SIZE,
    Bearer,
    BearerType,
    ScopeSyntaxError,
    _parse,
    parse_scope,
)
from delegation_service.domain.tokens import TokenKind
from tests.unit.domain.conftest import DEMO_CATALOG, ORG_ID, PERSON_ID, ParentFactory

GRANT = ("directory.delegations.rw", "directory.person.rw", "warehouse.items.rw")
PERSON = Bearer(BearerType.PERSON, PERSON_ID)


@pytest.fixture
def policy() -> DelegationPolicy:
    """A fresh policy per test, so cache counts start at zero."""
    return DelegationPolicy(Catalog.from_mapping(copy.deepcopy(DEMO_CATALOG)))


def test_the_same_question_is_answered_from_the_cache_with_the_same_decision(
    policy: DelegationPolicy, make_parent: ParentFactory
) -> None:
    request = DelegationRequest("billing", ["directory.person.r"])

    first = policy.decide(make_parent(GRANT, bearer=PERSON), request)
    # Another parent token with the same kind, scopes and bearer asks the same question.
    second = policy.decide(make_parent(GRANT, bearer=PERSON, expires_at=1_700_009_999), request)

    assert second is first
    assert policy.cache_info().hits == 1
    assert policy.cache_info().misses == 1


@pytest.mark.parametrize(
    ("parent_args", "request_"),
    [
        ({"scopes": (*GRANT, "warehouse.stock.r")}, DelegationRequest("billing", ["directory.person.r"])),
        (
            {"bearer": Bearer(BearerType.PERSON, "someone-else")},
            DelegationRequest("billing", ["directory.person.r"]),
        ),
        (
            {"bearer": Bearer(BearerType.ORGANIZATION, ORG_ID)},
            DelegationRequest("billing", ["directory.person.r"]),
        ),
        ({"kind": TokenKind.DELEGATED}, DelegationRequest("billing", ["directory.person.r"])),
        ({}, DelegationRequest("reader", ["directory.person.r"])),
        ({}, DelegationRequest("billing", ["warehouse.items.r"])),
        ({}, DelegationRequest("billing", ["directory.person.r", "directory.person.rw"])),
        ({}, DelegationRequest("billing", ["directory.person.r"], allow_partial=True)),
    ],
)
def test_any_differing_input_misses_the_cache(
    policy: DelegationPolicy,
    make_parent: ParentFactory,
    parent_args: dict[str, Any],
    request_: DelegationRequest,
) -> None:
    base_parent: dict[str, Any] = {"scopes": GRANT, "bearer": PERSON}
    policy.decide(make_parent(**base_parent), DelegationRequest("billing", ["directory.person.r"]))
    uncached = DelegationPolicy(policy.catalog, cache_size=0)
    parent = make_parent(**(base_parent | parent_args))

    outcome = _outcome(policy, parent, request_)

    assert policy.cache_info().hits == 0
    assert policy.cache_info().misses == 2
    assert _same(outcome, _outcome(uncached, parent, request_))


def test_the_cache_is_bounded(make_parent: ParentFactory) -> None:
    policy = DelegationPolicy(Catalog.from_mapping(copy.deepcopy(DEMO_CATALOG)), cache_size=3)
    parent = make_parent(GRANT, bearer=PERSON)
    clients = ["billing", "reader", "inventory", "greedy", "nothing"]

    for client in clients:
        _outcome(policy, parent, DelegationRequest(client))

    assert policy.cache_info().currsize == 3
    _outcome(policy, parent, DelegationRequest(clients[0]))  # the oldest was dropped
    assert policy.cache_info().hits == 0
    _outcome(policy, parent, DelegationRequest(clients[-1]))  # the newest is still there
    assert policy.cache_info().hits == 1


def test_an_oversized_question_is_decided_without_the_cache(
    policy: DelegationPolicy, make_parent: ParentFactory
) -> None:
    repeated = " ".join(["directory.person.r"] * (MAX_CACHED_REQUEST_CHARS // len("directory.person.r") + 1))
    long_request = DelegationRequest("billing", [repeated])

    for _ in range(2):
        decision = policy.decide(make_parent(GRANT, bearer=PERSON), long_request)
        assert [str(s) for s in decision.granted] == ["directory.person.r"]

    assert policy.cache_info().currsize == 0


@pytest.mark.parametrize(
    ("parent_args", "request_", "expected"),
    [
        (
            {"kind": TokenKind.DELEGATED},
            DelegationRequest("billing", ["directory.person.r"]),
            ParentCannotDelegate,
        ),
        ({"scopes": ("directory.person.rw",)}, DelegationRequest("billing"), MissingDelegationScope),
        ({}, DelegationRequest("no-such-client", ["directory.person.r"]), UnknownClient),
        (
            {},
            DelegationRequest("billing", ["directory.person.r", "Bad!", "warehouse.stock.r"]),
            ScopesRefused,
        ),
    ],
)
def test_a_cached_refusal_is_raised_again_as_a_fresh_equivalent_exception(
    policy: DelegationPolicy,
    make_parent: ParentFactory,
    parent_args: dict[str, Any],
    request_: DelegationRequest,
    expected: type[DelegationError],
) -> None:
    parent = make_parent(**({"scopes": GRANT, "bearer": PERSON} | parent_args))
    uncached = DelegationPolicy(policy.catalog, cache_size=0)

    caught: list[DelegationError] = []
    for _ in range(2):
        with pytest.raises(expected) as raised:
            policy.decide(parent, request_)
        caught.append(raised.value)
    with pytest.raises(expected) as reference:
        uncached.decide(parent, request_)

    first, second = caught
    assert policy.cache_info().hits == 1
    assert first is not second  # never the same object raised twice (tracebacks would pile up on it)
    for error in (first, second):
        assert _same(error, reference.value)
        assert error.__cause__ is None
        assert error.__context__ is None


def test_refusals_keep_their_reason_and_violations(
    policy: DelegationPolicy, make_parent: ParentFactory
) -> None:
    parent = make_parent(GRANT, bearer=PERSON)
    request = DelegationRequest("billing", ["Bad!"])

    for _ in range(2):
        with pytest.raises(ScopesRefused) as raised:
            policy.decide(parent, request)
        assert raised.value.reason is Reason.INVALID_SCOPE_STRUCTURE
        assert [(v.field, v.value) for v in raised.value.violations] == [("scopes[0]", "Bad!")]


def test_parse_scope_caches_valid_scopes_and_still_refuses_invalid_ones() -> None:
    text = "directory.cache_test.r"
    before = _parse.cache_info()

    first = parse_scope(text)
    second = parse_scope(text)

    assert second is first
    assert _parse.cache_info().hits == before.hits + 1
    assert _parse.cache_info().maxsize == PARSE_CACHE_SIZE
    for _ in range(2):
        with pytest.raises(ScopeSyntaxError):
            parse_scope("Not a scope")
    with pytest.raises(ScopeSyntaxError):
        parse_scope("a" * 300)  # refused before the cache sees it
    assert _parse.cache_info().currsize <= PARSE_CACHE_SIZE


def _outcome(policy: DelegationPolicy, parent: Any, request: DelegationRequest) -> object:
    try:
        return policy.decide(parent, request)
    except DelegationError as refused:
        return refused


def _same(left: object, right: object) -> bool:
    """Equal decisions, or exceptions of one class with the same state."""
    if isinstance(left, DelegationError) or isinstance(right, DelegationError):
        return (
            type(left) is type(right)
            and vars(left) == vars(right)
            and getattr(left, "args", None) == getattr(right, "args", None)
            and str(left) == str(right)
        )
    return left == right


def test_a_decision_builds_its_audiences_once(policy: DelegationPolicy, make_parent: ParentFactory) -> None:
    parent = make_parent((*GRANT, "https://api.publiq.be/auth/uitpas"), bearer=PERSON)
    request = DelegationRequest(
        "billing", ["warehouse.items.r", "https://api.publiq.be/auth/uitpas", "directory.person.r"]
    )

    decision = policy.decide(parent, request)

    assert decision.audiences == ("directory", "https://api.publiq.be/auth/uitpas", "warehouse")
    assert decision.audiences is decision.audiences
    assert policy.decide(parent, request).audiences is decision.audiences
