"""The delegation policy: SPEC §3 rules 3 to 7 and 9, one test per rule, plus hypothesis properties."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from delegation_service.domain.catalog import Catalog
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
)
from delegation_service.domain.policy import DROPPABLE, Decision, DelegationPolicy, DelegationRequest
from delegation_service.domain.scopes import (
    Bearer,
    BearerType,
    ScopeSyntaxError,
    StructuredScope,
    parse_scope,
)
from delegation_service.domain.tokens import TokenKind, VerifiedToken

UITPAS = "https://api.publiq.be/auth/uitpas"
ENTRY = "https://api.publiq.be/auth/entry"
ORG_ID = "b1475f65-236c-58b8-96e1-e1778b43beb7"
OTHER_ORG_ID = "0f0f0f0f-1111-4222-8333-444444444444"
PERSON_ID = "4d3c2b1a-0000-4000-8000-000000000001"
DELEGATION = "directory.delegations.rw"

PERSON = Bearer(BearerType.PERSON, PERSON_ID)
ORGANIZATION = Bearer(BearerType.ORGANIZATION, ORG_ID)

# A person's parent holding a bit of everything (machines and stock are organisation-only scopes).
PERSON_GRANT = (
    DELEGATION,
    "directory.person.rw",
    "directory.profile.rw",
    "warehouse.items.r",
    "directory.machines.rw",
    UITPAS,
    ENTRY,
)
ORGANIZATION_GRANT = (
    f"Org.{DELEGATION}",
    "directory.machines.rw",
    "directory.profile.r",
    "directory.person.rw",
    "warehouse.items.rw",
    "warehouse.stock.r",
)

ParentFactory = Callable[..., VerifiedToken]


def granted_texts(decision: Decision) -> list[str]:
    return [str(scope) for scope in decision.granted]


def refusal(
    policy: DelegationPolicy, parent: VerifiedToken, client_id: str, scopes: Sequence[str]
) -> ScopesRefused:
    with pytest.raises(ScopesRefused) as caught:
        policy.decide(parent, DelegationRequest(client_id, scopes))
    return caught.value


# --- Granting ---


def test_requested_scopes_held_by_parent_and_allowed_for_client_are_granted(
    policy: DelegationPolicy, make_parent: ParentFactory
) -> None:
    decision = policy.decide(
        make_parent(PERSON_GRANT, bearer=PERSON),
        DelegationRequest("billing", ["directory.person.r", UITPAS, "warehouse.items.r"]),
    )

    assert granted_texts(decision) == ["directory.person.r", UITPAS, "warehouse.items.r"]
    assert decision.dropped == ()


@pytest.mark.parametrize(
    ("bearer", "requested"),
    [
        (PERSON, "directory.person.r"),
        (PERSON, "Per.directory.person.r"),
        (PERSON, f"Per/{PERSON_ID}.directory.person.r"),
        (ORGANIZATION, "Org.warehouse.items.r"),
        (ORGANIZATION, f"Org/{ORG_ID}.warehouse.items.r"),
        (Bearer(BearerType.ORGANIZATION), "Org.warehouse.items.r"),
    ],
)
def test_granted_scope_never_carries_a_bearer_prefix(
    policy: DelegationPolicy, make_parent: ParentFactory, bearer: Bearer, requested: str
) -> None:
    grant = PERSON_GRANT if bearer.type is BearerType.PERSON else ORGANIZATION_GRANT
    decision = policy.decide(make_parent(grant, bearer=bearer), DelegationRequest("billing", [requested]))

    (scope,) = decision.granted
    assert isinstance(scope, StructuredScope)
    assert scope.bearer is None
    assert "Per" not in str(scope)
    assert "Org" not in str(scope)


def test_spellings_of_one_scope_collapse_into_one_grant(
    policy: DelegationPolicy, make_parent: ParentFactory
) -> None:
    decision = policy.decide(
        make_parent(PERSON_GRANT, bearer=PERSON),
        DelegationRequest(
            "billing",
            [
                "directory.person.r Per.directory.person.r",
                f"Per/{PERSON_ID}.directory.person.r",
                "directory.person.r",
            ],
        ),
    )

    assert granted_texts(decision) == ["directory.person.r"]


def test_parent_scopes_with_a_bearer_prefix_still_grant(
    policy: DelegationPolicy, make_parent: ParentFactory
) -> None:
    parent = make_parent([f"Per.{DELEGATION}", f"Per/{PERSON_ID}.directory.person.rw"], bearer=PERSON)

    decision = policy.decide(parent, DelegationRequest("billing", ["directory.person.r"]))

    assert granted_texts(decision) == ["directory.person.r"]


def test_unparsable_parent_scopes_are_ignored_not_fatal(
    policy: DelegationPolicy, make_parent: ParentFactory
) -> None:
    parent = make_parent(
        [DELEGATION, "Garbage!", "directory.person.r\n", "directory.person.r"], bearer=PERSON
    )

    decision = policy.decide(parent, DelegationRequest("billing", ["directory.person.r"]))

    assert granted_texts(decision) == ["directory.person.r"]


# --- Rule 3 and 4: who may delegate ---


@pytest.mark.parametrize(
    "scopes",
    [
        (),
        ("directory.person.rw", "warehouse.items.rw"),
        # Regression: holding the delegation scope at `r` is not holding `directory.delegations.rw`.
        ("directory.delegations.r", "directory.person.rw"),
        ("Org.directory.delegations.r",),
        ("warehouse.delegations.rw",),
        ("directory.delegations.rwx", "directory.delegations.rw\n", "DIRECTORY.delegations.rw"),
        (UITPAS,),
    ],
)
def test_parent_without_the_delegation_scope_cannot_delegate(
    policy: DelegationPolicy, make_parent: ParentFactory, scopes: Sequence[str]
) -> None:
    with pytest.raises(MissingDelegationScope) as caught:
        policy.decide(make_parent(scopes), DelegationRequest("billing", ["directory.person.r"]))

    assert caught.value.reason is Reason.MISSING_DELEGATION_SCOPE


def test_a_parent_naming_no_client_is_refused_rather_than_minting_an_unverifiable_child(
    policy: DelegationPolicy, make_parent: ParentFactory
) -> None:
    parent = dataclasses.replace(make_parent((DELEGATION, "directory.person.r")), client_id="")
    with pytest.raises(ParentWithoutClient) as caught:
        policy.decide(parent, DelegationRequest("billing", ["directory.person.r"]))
    assert caught.value.reason is Reason.PARENT_WITHOUT_CLIENT


@pytest.mark.parametrize(
    "delegation", [DELEGATION, f"Per.{DELEGATION}", f"Org.{DELEGATION}", f"Org/{ORG_ID}.{DELEGATION}"]
)
def test_delegation_scope_with_any_bearer_prefix_lets_the_parent_delegate(
    policy: DelegationPolicy, make_parent: ParentFactory, delegation: str
) -> None:
    decision = policy.decide(
        make_parent([delegation, "warehouse.items.rw"]), DelegationRequest("billing", ["warehouse.items.r"])
    )

    assert granted_texts(decision) == ["warehouse.items.r"]


def test_lower_delegation_scope_configured_is_covered_by_a_parent_holding_rw(
    demo_catalog_data: Callable[[], dict[str, object]], make_parent: ParentFactory
) -> None:
    data = demo_catalog_data()
    data["delegation_scope"] = "directory.delegations.r"
    policy = DelegationPolicy(Catalog.from_mapping(data))

    decision = policy.decide(
        make_parent(["directory.delegations.rw", "warehouse.items.rw"]),
        DelegationRequest("billing", ["warehouse.items.r"]),
    )

    assert granted_texts(decision) == ["warehouse.items.r"]


def test_delegated_parent_cannot_delegate_even_with_the_delegation_scope(
    policy: DelegationPolicy, make_parent: ParentFactory
) -> None:
    parent = make_parent(PERSON_GRANT, kind=TokenKind.DELEGATED)

    with pytest.raises(ParentCannotDelegate) as caught:
        policy.decide(parent, DelegationRequest("billing", ["directory.person.r"]))

    assert caught.value.reason is Reason.DELEGATION_ACCESS_TOKEN_CANNOT_DELEGATE


def test_delegated_parent_is_refused_before_anything_else(
    policy: DelegationPolicy, make_parent: ParentFactory
) -> None:
    parent = make_parent((), kind=TokenKind.DELEGATED)

    with pytest.raises(ParentCannotDelegate):
        policy.decide(parent, DelegationRequest("no-such-client", ["abc.def.rwx"]))


# --- The target client ---


def test_unknown_client_is_refused_with_a_client_id_violation(
    policy: DelegationPolicy, make_parent: ParentFactory
) -> None:
    with pytest.raises(UnknownClient) as caught:
        policy.decide(make_parent(PERSON_GRANT), DelegationRequest("no-such-client", ["directory.person.r"]))

    assert caught.value.reason is Reason.UNKNOWN_CLIENT
    [violation] = caught.value.violations
    assert (violation.field, violation.value, violation.reason) == (
        "client_id",
        "no-such-client",
        Reason.UNKNOWN_CLIENT,
    )


def test_missing_client_id_is_an_invalid_request(
    policy: DelegationPolicy, make_parent: ParentFactory
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        policy.decide(make_parent(PERSON_GRANT), DelegationRequest("", ["directory.person.r"]))

    assert caught.value.reason is Reason.INVALID_REQUEST
    assert [v.field for v in caught.value.violations] == ["client_id"]


# --- Rule 5 and 6: each requested scope, each with its reason ---

SINGLE_REFUSALS = [
    # Structure.
    (PERSON, PERSON_GRANT, "billing", "abc.def.rwx", Reason.INVALID_SCOPE_STRUCTURE),
    (PERSON, PERSON_GRANT, "billing", "Directory.person.r", Reason.INVALID_SCOPE_STRUCTURE),
    (PERSON, PERSON_GRANT, "billing", "directory.person.r\n", Reason.INVALID_SCOPE_STRUCTURE),
    (PERSON, PERSON_GRANT, "billing", "directory.person.r\tx", Reason.INVALID_SCOPE_STRUCTURE),
    (PERSON, PERSON_GRANT, "billing", "http://api.publiq.be/auth/uitpas", Reason.INVALID_SCOPE_STRUCTURE),
    # Unknown audience or name.
    (PERSON, PERSON_GRANT, "billing", "nowhere.person.r", Reason.INVALID_AUDIENCE),
    (PERSON, PERSON_GRANT, "billing", "Per.nowhere.person.r", Reason.INVALID_AUDIENCE),
    (PERSON, PERSON_GRANT, "billing", "directory.nobody.r", Reason.INVALID_SCOPE_NAME),
    (PERSON, PERSON_GRANT, "billing", "warehouse.person.r", Reason.INVALID_SCOPE_NAME),
    (PERSON, PERSON_GRANT, "billing", "https://undeclared.example/scope", Reason.INVALID_SCOPE_NAME),
    # Bearers other than the parent's.
    (PERSON, PERSON_GRANT, "billing", "Org.warehouse.items.r", Reason.DIFFERENT_BEARER_TYPES),
    (PERSON, PERSON_GRANT, "billing", f"Per/{ORG_ID}.directory.person.r", Reason.DIFFERENT_BEARER_TYPES),
    (ORGANIZATION, ORGANIZATION_GRANT, "billing", "warehouse.items.r", Reason.DIFFERENT_BEARER_TYPES),
    (ORGANIZATION, ORGANIZATION_GRANT, "billing", "Per.warehouse.items.r", Reason.DIFFERENT_BEARER_TYPES),
    (
        ORGANIZATION,
        ORGANIZATION_GRANT,
        "billing",
        f"Org/{OTHER_ORG_ID}.warehouse.items.r",
        Reason.DIFFERENT_BEARER_TYPES,
    ),
    (
        Bearer(BearerType.ORGANIZATION),
        ORGANIZATION_GRANT,
        "billing",
        f"Org/{ORG_ID}.warehouse.items.r",
        Reason.DIFFERENT_BEARER_TYPES,
    ),
    # Scopes not available for the bearer type.
    (PERSON, PERSON_GRANT, "inventory", "directory.machines.r", Reason.UNAVAILABLE_SCOPE_FOR_BEARER_TYPE),
    (PERSON, PERSON_GRANT, "inventory", "Per.warehouse.stock.r", Reason.UNAVAILABLE_SCOPE_FOR_BEARER_TYPE),
    (
        ORGANIZATION,
        ORGANIZATION_GRANT,
        "billing",
        "Org.directory.person.r",
        Reason.UNAVAILABLE_SCOPE_FOR_BEARER_TYPE,
    ),
    # Not covered by the parent under the lattice.
    (
        PERSON,
        ("directory.delegations.rw", "directory.person.r"),
        "greedy",
        "directory.person.rw",
        Reason.SCOPE_WAS_NOT_GRANTED_IN_PARENT,
    ),
    (PERSON, PERSON_GRANT, "billing", "warehouse.items.rw", Reason.SCOPE_WAS_NOT_GRANTED_IN_PARENT),
    (PERSON, (DELEGATION,), "billing", "directory.person.r", Reason.SCOPE_WAS_NOT_GRANTED_IN_PARENT),
    (PERSON, (DELEGATION, "directory.person.r"), "billing", UITPAS, Reason.SCOPE_WAS_NOT_GRANTED_IN_PARENT),
    (
        ORGANIZATION,
        ORGANIZATION_GRANT,
        "inventory",
        "Org.warehouse.stock.rw",
        Reason.SCOPE_WAS_NOT_GRANTED_IN_PARENT,
    ),
    # Not allowed for the target client.
    (PERSON, PERSON_GRANT, "billing", "directory.profile.r", Reason.SCOPE_NOT_ALLOWED_FOR_CLIENT),
    (PERSON, PERSON_GRANT, "billing", "directory.person.rw", Reason.SCOPE_NOT_ALLOWED_FOR_CLIENT),
    (PERSON, PERSON_GRANT, "billing", ENTRY, Reason.SCOPE_NOT_ALLOWED_FOR_CLIENT),
    (PERSON, PERSON_GRANT, "nothing", "directory.person.r", Reason.SCOPE_NOT_ALLOWED_FOR_CLIENT),
    # The delegation scope itself, however it is spelled (rule 5), even for a client allowed it.
    (PERSON, PERSON_GRANT, "greedy", DELEGATION, Reason.DELEGATION_ACCESS_TOKEN_CANNOT_DELEGATE),
    (
        PERSON,
        PERSON_GRANT,
        "greedy",
        "directory.delegations.r",
        Reason.DELEGATION_ACCESS_TOKEN_CANNOT_DELEGATE,
    ),
    (PERSON, PERSON_GRANT, "billing", f"Per.{DELEGATION}", Reason.DELEGATION_ACCESS_TOKEN_CANNOT_DELEGATE),
    (
        PERSON,
        PERSON_GRANT,
        "billing",
        f"Per/{PERSON_ID}.{DELEGATION}",
        Reason.DELEGATION_ACCESS_TOKEN_CANNOT_DELEGATE,
    ),
    (
        ORGANIZATION,
        ORGANIZATION_GRANT,
        "greedy",
        f"Org.{DELEGATION}",
        Reason.DELEGATION_ACCESS_TOKEN_CANNOT_DELEGATE,
    ),
    (
        ORGANIZATION,
        ORGANIZATION_GRANT,
        "greedy",
        f"Org/{ORG_ID}.directory.delegations.r",
        Reason.DELEGATION_ACCESS_TOKEN_CANNOT_DELEGATE,
    ),
]


@pytest.mark.parametrize(
    ("bearer", "grant", "client_id", "requested", "reason"),
    SINGLE_REFUSALS,
    ids=[f"{bearer}:{requested!a}->{reason.value}" for bearer, _, _, requested, reason in SINGLE_REFUSALS],
)
def test_refused_scope_is_reported_with_its_reason(
    policy: DelegationPolicy,
    make_parent: ParentFactory,
    bearer: Bearer,
    grant: Sequence[str],
    client_id: str,
    requested: str,
    reason: Reason,
) -> None:
    error = refusal(policy, make_parent(grant, bearer=bearer), client_id, [requested])

    assert error.reason is reason
    [violation] = error.violations
    assert (violation.field, violation.value, violation.reason) == ("scopes[0]", requested, reason)
    assert violation.description


def test_every_failing_scope_is_reported_with_its_field_index(
    policy: DelegationPolicy, make_parent: ParentFactory
) -> None:
    requested = [
        "directory.person.r",  # fine
        "abc.def.rwx",
        "warehouse.items.rw",
        "Org.warehouse.items.r",
        "directory.profile.r",
        "directory.person.r",  # a duplicate of a fine scope: neither reported nor an error
        DELEGATION,
    ]

    error = refusal(policy, make_parent(PERSON_GRANT, bearer=PERSON), "billing", requested)

    assert [(v.field, v.value, v.reason) for v in error.violations] == [
        ("scopes[1]", "abc.def.rwx", Reason.INVALID_SCOPE_STRUCTURE),
        ("scopes[2]", "warehouse.items.rw", Reason.SCOPE_WAS_NOT_GRANTED_IN_PARENT),
        ("scopes[3]", "Org.warehouse.items.r", Reason.DIFFERENT_BEARER_TYPES),
        ("scopes[4]", "directory.profile.r", Reason.SCOPE_NOT_ALLOWED_FOR_CLIENT),
        ("scopes[6]", DELEGATION, Reason.DELEGATION_ACCESS_TOKEN_CANNOT_DELEGATE),
    ]
    # Malformed input outranks refusals in the call's own reason.
    assert error.reason is Reason.INVALID_SCOPE_STRUCTURE


def test_four_refusals_without_malformed_input_take_the_most_severe_reason(
    policy: DelegationPolicy, make_parent: ParentFactory
) -> None:
    requested = [
        "directory.profile.r",
        "warehouse.items.rw",
        "directory.machines.r",
        "Org.directory.person.r",
    ]

    error = refusal(policy, make_parent(PERSON_GRANT, bearer=PERSON), "billing", requested)

    assert [(v.field, v.reason) for v in error.violations] == [
        ("scopes[0]", Reason.SCOPE_NOT_ALLOWED_FOR_CLIENT),
        ("scopes[1]", Reason.SCOPE_WAS_NOT_GRANTED_IN_PARENT),
        ("scopes[2]", Reason.UNAVAILABLE_SCOPE_FOR_BEARER_TYPE),
        ("scopes[3]", Reason.DIFFERENT_BEARER_TYPES),
    ]
    assert error.reason is Reason.DIFFERENT_BEARER_TYPES


def test_scopes_of_a_space_separated_entry_are_reported_under_that_entry(
    policy: DelegationPolicy, make_parent: ParentFactory
) -> None:
    error = refusal(
        policy,
        make_parent(PERSON_GRANT, bearer=PERSON),
        "billing",
        ["directory.person.r nowhere.person.r", "directory.nobody.r directory.profile.r"],
    )

    assert [(v.field, v.value, v.reason) for v in error.violations] == [
        ("scopes[0]", "nowhere.person.r", Reason.INVALID_AUDIENCE),
        ("scopes[1]", "directory.nobody.r", Reason.INVALID_SCOPE_NAME),
        ("scopes[1]", "directory.profile.r", Reason.SCOPE_NOT_ALLOWED_FOR_CLIENT),
    ]


def test_request_mixing_bearer_types_is_refused(policy: DelegationPolicy, make_parent: ParentFactory) -> None:
    error = refusal(
        policy,
        make_parent(PERSON_GRANT, bearer=PERSON),
        "billing",
        ["Per.directory.person.r", "Org.warehouse.items.r"],
    )

    assert [(v.field, v.reason) for v in error.violations] == [("scopes[1]", Reason.DIFFERENT_BEARER_TYPES)]


def test_scope_refusal_message_names_no_scope_value(
    policy: DelegationPolicy, make_parent: ParentFactory
) -> None:
    error = refusal(policy, make_parent(PERSON_GRANT), "billing", ["secretish.value.r"])

    assert "secretish" not in str(error)


# --- Rule 7: no scopes requested ---


@pytest.mark.parametrize(
    ("scopes", "bad_indices"),
    [
        (("",), [0]),
        ((" ", "  "), [0, 1]),
        (("\t",), [0]),
        (("directory.person.r", ""), [1]),
        (("directory.person.r  warehouse.items.r",), [0]),
        ((" directory.person.r",), [0]),
        (("directory.person.r ",), [0]),
    ],
)
def test_blank_entries_and_bad_spacing_fail_closed_at_their_index(
    policy: DelegationPolicy, make_parent: ParentFactory, scopes: Sequence[str], bad_indices: list[int]
) -> None:
    """SPEC §2: never read as "no scopes", which would mint the broadest child the client may hold."""
    with pytest.raises(ScopesRefused) as caught:
        policy.decide(make_parent(PERSON_GRANT, bearer=PERSON), DelegationRequest("billing", scopes))
    assert [(v.field, v.reason) for v in caught.value.violations] == [
        (f"scopes[{i}]", Reason.INVALID_SCOPE_STRUCTURE) for i in bad_indices
    ]


def test_a_request_mixing_malformed_and_refused_scopes_reports_both_kinds(
    policy: DelegationPolicy, make_parent: ParentFactory
) -> None:
    request = DelegationRequest("billing", ["", "directory.person.r", "warehouse.stock.r"])
    with pytest.raises(ScopesRefused) as caught:
        policy.decide(make_parent(PERSON_GRANT, bearer=PERSON), request)
    reasons = {(v.field, v.reason) for v in caught.value.violations}
    assert (("scopes[0]", Reason.INVALID_SCOPE_STRUCTURE)) in reasons
    assert any(
        field == "scopes[2]" and reason is not Reason.INVALID_SCOPE_STRUCTURE for field, reason in reasons
    )


@pytest.mark.parametrize("scopes", [()])
def test_omitted_scopes_grant_everything_the_client_may_hold_minus_delegation(
    policy: DelegationPolicy, make_parent: ParentFactory, scopes: Sequence[str]
) -> None:
    decision = policy.decide(make_parent(PERSON_GRANT, bearer=PERSON), DelegationRequest("billing", scopes))

    # person.rw is downgraded to what billing may hold; profile, ENTRY and machines are not for billing
    # (machines is not even for persons); the delegation scope never passes.
    assert granted_texts(decision) == ["directory.person.r", "warehouse.items.r", UITPAS]
    assert decision.dropped == ()


def test_omitted_scopes_keep_rw_when_the_client_may_hold_rw(
    policy: DelegationPolicy, make_parent: ParentFactory
) -> None:
    decision = policy.decide(make_parent(PERSON_GRANT, bearer=PERSON), DelegationRequest("greedy"))

    assert granted_texts(decision) == ["directory.person.rw", "directory.profile.rw"]


def test_omitted_scopes_skip_those_unavailable_for_the_bearer_type(
    policy: DelegationPolicy, make_parent: ParentFactory
) -> None:
    decision = policy.decide(
        make_parent(ORGANIZATION_GRANT, bearer=ORGANIZATION), DelegationRequest("inventory")
    )

    assert granted_texts(decision) == [
        "directory.machines.r",
        "directory.profile.r",
        "warehouse.items.rw",
        "warehouse.stock.r",
    ]


def test_omitted_scopes_never_upgrade_a_read_parent(
    policy: DelegationPolicy, make_parent: ParentFactory
) -> None:
    decision = policy.decide(
        make_parent([DELEGATION, "directory.person.r", "directory.profile.r"]), DelegationRequest("greedy")
    )

    assert granted_texts(decision) == ["directory.person.r", "directory.profile.r"]


@pytest.mark.parametrize(
    ("grant", "client_id"),
    [
        (PERSON_GRANT, "nothing"),
        ((DELEGATION,), "greedy"),  # the delegation scope is the only one the client could hold
        ((DELEGATION, "directory.profile.rw", ENTRY), "billing"),
        ((DELEGATION, "directory.nobody.rw", "nowhere.person.rw"), "billing"),  # undeclared parent scopes
    ],
)
def test_omitted_scopes_with_nothing_to_grant_is_an_error(
    policy: DelegationPolicy, make_parent: ParentFactory, grant: Sequence[str], client_id: str
) -> None:
    with pytest.raises(NoGrantableScopes) as caught:
        policy.decide(make_parent(grant, bearer=PERSON), DelegationRequest(client_id))

    assert caught.value.reason is Reason.NO_GRANTABLE_SCOPES


def test_require_explicit_scopes_refuses_an_empty_request(
    catalog: Catalog, make_parent: ParentFactory
) -> None:
    policy = DelegationPolicy(catalog, require_explicit_scopes=True)

    with pytest.raises(InvalidRequest) as caught:
        policy.decide(make_parent(PERSON_GRANT), DelegationRequest("billing", []))

    assert caught.value.reason is Reason.SCOPES_REQUIRED


def test_require_explicit_scopes_still_grants_explicit_requests(
    catalog: Catalog, make_parent: ParentFactory
) -> None:
    policy = DelegationPolicy(catalog, require_explicit_scopes=True)

    decision = policy.decide(make_parent(PERSON_GRANT), DelegationRequest("billing", ["directory.person.r"]))

    assert granted_texts(decision) == ["directory.person.r"]


# --- Rule 9: allow_partial ---

DROPPABLE_REQUEST = [
    "directory.person.r",  # granted
    "directory.profile.r",  # not allowed for billing
    "warehouse.items.rw",  # parent holds only r
    "directory.machines.r",  # organisation-only
]


def test_allow_partial_drops_grant_refusals_and_lists_them(
    policy: DelegationPolicy, make_parent: ParentFactory
) -> None:
    decision = policy.decide(
        make_parent(PERSON_GRANT, bearer=PERSON),
        DelegationRequest("billing", DROPPABLE_REQUEST, allow_partial=True),
    )

    assert granted_texts(decision) == ["directory.person.r"]
    assert [(v.field, v.value, v.reason) for v in decision.dropped] == [
        ("scopes[1]", "directory.profile.r", Reason.SCOPE_NOT_ALLOWED_FOR_CLIENT),
        ("scopes[2]", "warehouse.items.rw", Reason.SCOPE_WAS_NOT_GRANTED_IN_PARENT),
        ("scopes[3]", "directory.machines.r", Reason.UNAVAILABLE_SCOPE_FOR_BEARER_TYPE),
    ]


def test_without_allow_partial_the_same_request_fails_on_every_refusal(
    policy: DelegationPolicy, make_parent: ParentFactory
) -> None:
    error = refusal(policy, make_parent(PERSON_GRANT, bearer=PERSON), "billing", DROPPABLE_REQUEST)

    assert [v.field for v in error.violations] == ["scopes[1]", "scopes[2]", "scopes[3]"]


@pytest.mark.parametrize(
    ("structural", "reason"),
    [
        ("abc.def.rwx", Reason.INVALID_SCOPE_STRUCTURE),
        ("nowhere.person.r", Reason.INVALID_AUDIENCE),
        ("directory.nobody.r", Reason.INVALID_SCOPE_NAME),
        ("https://undeclared.example/scope", Reason.INVALID_SCOPE_NAME),
        ("Org.warehouse.items.r", Reason.DIFFERENT_BEARER_TYPES),
        (DELEGATION, Reason.DELEGATION_ACCESS_TOKEN_CANNOT_DELEGATE),
    ],
)
def test_allow_partial_still_fails_on_structural_errors(
    policy: DelegationPolicy, make_parent: ParentFactory, structural: str, reason: Reason
) -> None:
    with pytest.raises(ScopesRefused) as caught:
        policy.decide(
            make_parent(PERSON_GRANT, bearer=PERSON),
            DelegationRequest("billing", [*DROPPABLE_REQUEST, structural], allow_partial=True),
        )

    assert caught.value.reason is reason
    assert ("scopes[4]", structural, reason) in [
        (v.field, v.value, v.reason) for v in caught.value.violations
    ]
    # The call fails, so every failing scope is reported (SPEC §3.6), the droppable ones included.
    assert [v.field for v in caught.value.violations] == ["scopes[1]", "scopes[2]", "scopes[3]", "scopes[4]"]


def test_allow_partial_with_nothing_left_fails(policy: DelegationPolicy, make_parent: ParentFactory) -> None:
    with pytest.raises(ScopesRefused) as caught:
        policy.decide(
            make_parent(PERSON_GRANT, bearer=PERSON),
            DelegationRequest("billing", DROPPABLE_REQUEST[1:], allow_partial=True),
        )

    assert [v.field for v in caught.value.violations] == ["scopes[0]", "scopes[1]", "scopes[2]"]


def test_droppable_reasons_are_exactly_the_grant_checks() -> None:
    assert (
        frozenset(
            {
                Reason.UNAVAILABLE_SCOPE_FOR_BEARER_TYPE,
                Reason.SCOPE_WAS_NOT_GRANTED_IN_PARENT,
                Reason.SCOPE_NOT_ALLOWED_FOR_CLIENT,
            }
        )
        == DROPPABLE
    )


# --- Scope count cap ---


def test_too_many_scopes_is_refused(catalog: Catalog, make_parent: ParentFactory) -> None:
    policy = DelegationPolicy(catalog, max_scopes=2)

    with pytest.raises(InvalidRequest) as caught:
        policy.decide(
            make_parent(PERSON_GRANT), DelegationRequest("billing", ["aaa.aaa.r bbb.bbb.r", "ccc.ccc.r"])
        )

    assert caught.value.reason is Reason.TOO_MANY_SCOPES


def test_scope_cap_counts_distinct_scopes(catalog: Catalog, make_parent: ParentFactory) -> None:
    policy = DelegationPolicy(catalog, max_scopes=2)

    decision = policy.decide(
        make_parent(PERSON_GRANT),
        DelegationRequest(
            "billing", ["directory.person.r", UITPAS, "directory.person.r", f"{UITPAS} {UITPAS}"]
        ),
    )

    assert granted_texts(decision) == ["directory.person.r", UITPAS]


# --- Properties ---

_BEARER_PREFIXES = ["", "", "", "Per.", "Org.", f"Per/{PERSON_ID}.", f"Org/{ORG_ID}.", f"Org/{OTHER_ORG_ID}."]
_DECLARED_KEYS = [
    "directory.person",
    "directory.machines",
    "directory.delegations",
    "directory.profile",
    "warehouse.items",
    "warehouse.stock",
]
_declared_scope = st.builds(
    lambda prefix, key, permission: f"{prefix}{key}.{permission}",
    st.sampled_from(_BEARER_PREFIXES),
    st.sampled_from(_DECLARED_KEYS),
    st.sampled_from(["r", "rw"]),
)
_url_scope = st.sampled_from([UITPAS, ENTRY])
_junk_scope = st.one_of(
    st.sampled_from(
        ["warehouse.person.r", "nowhere.items.r", "directory.person.w", "https://undeclared.example/x"]
    ),
    st.text(max_size=12),
)
# Mostly meaningful scopes, some junk: enough grants to make the properties bite.
_vocabulary_scope = st.one_of(_declared_scope, _declared_scope, _declared_scope, _url_scope, _junk_scope)
_scope_entries = st.lists(_vocabulary_scope, max_size=6).flatmap(
    lambda scopes: st.sampled_from([scopes, [" ".join(scopes)] if scopes else []])
)
_bearers = st.sampled_from([PERSON, ORGANIZATION, Bearer(BearerType.PERSON), Bearer(BearerType.ORGANIZATION)])
_known_clients = st.sampled_from(["billing", "inventory", "reader", "greedy", "nothing"])


def _assert_decision_is_sound(
    catalog: Catalog, parent: VerifiedToken, request: DelegationRequest, decision: Decision
) -> None:
    """Only a delegating parent gets a grant; each scope is covered, allowed, never the delegation scope."""
    held = []
    for text in parent.scopes:
        try:
            held.append(parse_scope(text))
        except ScopeSyntaxError:
            continue
    client = catalog.clients[request.client_id]
    assert parent.kind is TokenKind.UPSTREAM
    assert any(parent_scope.covers(catalog.delegation_scope) for parent_scope in held)
    assert decision.granted
    for scope in decision.granted:
        assert any(parent_scope.covers(scope) for parent_scope in held)
        assert not catalog.is_delegation_scope(scope)
        assert client.may_hold(scope)
        if isinstance(scope, StructuredScope):
            assert scope.bearer is None
            assert parent.bearer.type in catalog.bearer_types(scope)
        else:
            assert scope.url in catalog.url_scopes
    assert len(set(decision.granted)) == len(decision.granted)
    assert all(v.reason in DROPPABLE for v in decision.dropped)
    assert request.allow_partial or decision.dropped == ()


@settings(deadline=None)
@given(
    bearer=_bearers,
    parent_scopes=st.lists(st.one_of(_declared_scope, _url_scope), max_size=8),
    client_id=_known_clients,
    requested=_scope_entries,
    allow_partial=st.booleans(),
)
def test_granted_scopes_are_covered_by_parent_allowed_for_client_and_never_delegation(
    catalog: Catalog,
    make_parent: ParentFactory,
    bearer: Bearer,
    parent_scopes: list[str],
    client_id: str,
    requested: list[str],
    allow_partial: bool,
) -> None:
    policy = DelegationPolicy(catalog)
    parent = make_parent([DELEGATION, *parent_scopes], bearer=bearer)
    request = DelegationRequest(client_id, requested, allow_partial=allow_partial)

    try:
        decision = policy.decide(parent, request)
    except (ScopesRefused, NoGrantableScopes):
        return

    _assert_decision_is_sound(catalog, parent, request, decision)


@settings(deadline=None)
@given(
    bearer=_bearers,
    kind=st.sampled_from([TokenKind.UPSTREAM, TokenKind.UPSTREAM, TokenKind.DELEGATED]),
    parent_scopes=st.lists(_vocabulary_scope, max_size=8).flatmap(
        lambda scopes: st.sampled_from([scopes, [DELEGATION, *scopes]])
    ),
    client_id=st.one_of(_known_clients, st.sampled_from(["unknown", ""]), st.text(max_size=8)),
    requested=st.one_of(_scope_entries, st.lists(st.text(max_size=30), max_size=4)),
    allow_partial=st.booleans(),
    require_explicit=st.booleans(),
)
def test_decide_returns_a_sound_decision_or_raises_a_delegation_error(
    catalog: Catalog,
    make_parent: ParentFactory,
    bearer: Bearer,
    kind: TokenKind,
    parent_scopes: list[str],
    client_id: str,
    requested: list[str],
    allow_partial: bool,
    require_explicit: bool,
) -> None:
    policy = DelegationPolicy(catalog, require_explicit_scopes=require_explicit, max_scopes=5)
    parent = make_parent(parent_scopes, bearer=bearer, kind=kind)
    request = DelegationRequest(client_id, requested, allow_partial=allow_partial)

    outcome: Decision | DelegationError
    try:
        outcome = policy.decide(parent, request)
    except DelegationError as error:  # anything else escapes and fails the test
        outcome = error

    if isinstance(outcome, DelegationError):
        # Every violation points at a real request field.
        fields = {"client_id"} | {f"scopes[{i}]" for i in range(len(requested))}
        assert all(v.field in fields for v in outcome.violations)
    else:
        _assert_decision_is_sound(catalog, parent, request, outcome)
