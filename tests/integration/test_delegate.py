"""SPEC §3 through a real gRPC channel and a real Redis: status code, ErrorInfo reason, field violations."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
import jwt
import pytest

from delegation_service.adapters.upstream_dev import DevUpstreamIssuer
from delegation_service.client import DelegationClient, ErrorDetails, error_details
from delegation_service.domain.scopes import Bearer, BearerType
from tests.integration.harness import DELEGATION_SCOPE, SERVICE_ISSUER, Harness

INVALID = grpc.StatusCode.INVALID_ARGUMENT
DENIED = grpc.StatusCode.PERMISSION_DENIED


def refused(call: Callable[[], Any]) -> ErrorDetails:
    with pytest.raises(grpc.RpcError) as info:
        call()
    details = error_details(info.value)
    assert details.domain == "delegation-service"
    return details


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def test_delegate_mints_a_child_with_the_requested_scopes(harness: Harness, client: DelegationClient) -> None:
    response = client.delegate(harness.parent(), "billing", ["warehouse.items.r"])

    assert list(response.scopes) == ["warehouse.items.r"]
    assert response.token_type == "Bearer"
    assert response.issued_token_type == "urn:ietf:params:oauth:token-type:jwt"
    assert response.client_id == "billing"
    assert response.bearer.type == 1 and response.bearer.id == "alice"
    claims = claims_of(response.access_token)
    header = jwt.get_unverified_header(response.access_token)
    assert header["typ"] == "at+jwt" and header["kid"]
    assert claims["iss"] == SERVICE_ISSUER
    assert claims["scope"] == "warehouse.items.r"
    assert claims["client_id"] == "billing"
    assert claims["act"] == {"sub": "gateway"}
    assert claims["jti"] == response.token_id
    assert claims["chain_id"] == response.chain_id
    assert claims["exp"] == response.expire_time.seconds


def test_space_separated_scopes_and_duplicates_collapse(harness: Harness, client: DelegationClient) -> None:
    response = client.delegate(
        harness.parent(), "billing", ["warehouse.items.r directory.person.r", "warehouse.items.r"]
    )
    assert list(response.scopes) == ["warehouse.items.r", "directory.person.r"]


def test_returned_scopes_drop_the_bearer_prefix(harness: Harness, client: DelegationClient) -> None:
    response = client.delegate(
        harness.parent(), "billing", ["Per.warehouse.items.r", "Per/alice.directory.person.r"]
    )
    assert list(response.scopes) == ["warehouse.items.r", "directory.person.r"]
    assert claims_of(response.access_token)["bearer"] == {"type": "Per", "id": "alice"}


def test_rw_in_parent_covers_r_but_r_does_not_cover_rw(harness: Harness, client: DelegationClient) -> None:
    parent = harness.parent(scopes=(DELEGATION_SCOPE, "warehouse.items.r"))
    assert list(client.delegate(parent, "billing", ["warehouse.items.r"]).scopes) == ["warehouse.items.r"]

    details = refused(lambda: client.delegate(parent, "billing", ["warehouse.items.rw"]))
    assert details.code == DENIED
    assert details.reason == "SCOPE_WAS_NOT_GRANTED_IN_PARENT"
    assert details.metadata["scope"] == "warehouse.items.rw"
    assert details.violations == (("scopes[0]", "SCOPE_WAS_NOT_GRANTED_IN_PARENT", details.violations[0][2]),)


def test_url_form_scope_is_matched_exactly(harness: Harness, client: DelegationClient) -> None:
    url = "https://api.publiq.be/auth/uitpas"
    parent = harness.parent(scopes=(DELEGATION_SCOPE, url))
    assert list(client.delegate(parent, "billing", [url]).scopes) == [url]

    details = refused(lambda: client.delegate(parent, "billing", [url + "/other"]))
    assert (details.code, details.reason) == (INVALID, "INVALID_SCOPE_NAME")


def test_every_failing_scope_is_reported_in_one_error(harness: Harness, client: DelegationClient) -> None:
    details = refused(
        lambda: client.delegate(
            harness.parent(),
            "billing",
            [
                "warehouse.items.r",
                "a.b.rwx",
                "nowhere.items.r",
                "warehouse.nothing.r",
                "Org.warehouse.items.r",
            ],
        )
    )
    assert details.code == INVALID
    assert details.reason == "INVALID_SCOPE_STRUCTURE"
    assert [(f, r) for f, r, _ in details.violations] == [
        ("scopes[1]", "INVALID_SCOPE_STRUCTURE"),
        ("scopes[2]", "INVALID_AUDIENCE"),
        ("scopes[3]", "INVALID_SCOPE_NAME"),
        ("scopes[4]", "DIFFERENT_BEARER_TYPES"),
    ]
    assert details.metadata["scopes"] == "a.b.rwx nowhere.items.r warehouse.nothing.r Org.warehouse.items.r"


@pytest.mark.parametrize(
    ("scope", "code", "reason"),
    [
        ("a.b.rwx", INVALID, "INVALID_SCOPE_STRUCTURE"),
        ("warehouse.items.r ", INVALID, "INVALID_SCOPE_STRUCTURE"),  # RFC 6749 §3.3: no trailing space
        ("", INVALID, "INVALID_SCOPE_STRUCTURE"),  # never "no scopes" (SPEC §2)
        ("warehouse.items.r\t", INVALID, "INVALID_SCOPE_STRUCTURE"),
        ("Warehouse.items.r", INVALID, "INVALID_SCOPE_STRUCTURE"),
        ("nowhere.items.r", INVALID, "INVALID_AUDIENCE"),
        ("warehouse.nothing.r", INVALID, "INVALID_SCOPE_NAME"),
        ("Org.warehouse.items.r", INVALID, "DIFFERENT_BEARER_TYPES"),
        ("Per/bob.warehouse.items.r", INVALID, "DIFFERENT_BEARER_TYPES"),
        ("directory.machines.r", DENIED, "UNAVAILABLE_SCOPE_FOR_BEARER_TYPE"),
        ("directory.person.rw", DENIED, "SCOPE_NOT_ALLOWED_FOR_CLIENT"),
        (DELEGATION_SCOPE, DENIED, "DELEGATION_ACCESS_TOKEN_CANNOT_DELEGATE"),
        ("Per." + DELEGATION_SCOPE, DENIED, "DELEGATION_ACCESS_TOKEN_CANNOT_DELEGATE"),
        ("directory.delegations.r", DENIED, "DELEGATION_ACCESS_TOKEN_CANNOT_DELEGATE"),
    ],
)
def test_each_scope_refusal_has_its_status_and_reason(
    harness: Harness, client: DelegationClient, scope: str, code: grpc.StatusCode | None, reason: str | None
) -> None:
    parent = harness.parent()
    if code is None:
        client.delegate(parent, "billing", [scope])
        return
    details = refused(lambda: client.delegate(parent, "billing", [scope]))
    assert (details.code, details.reason) == (code, reason)
    assert [(f, r) for f, r, _ in details.violations] == [("scopes[0]", reason)]


def test_scope_not_granted_in_parent(harness: Harness, client: DelegationClient) -> None:
    parent = harness.parent(scopes=(DELEGATION_SCOPE, "directory.person.r"))
    details = refused(lambda: client.delegate(parent, "billing", ["warehouse.items.r"]))
    assert (details.code, details.reason) == (DENIED, "SCOPE_WAS_NOT_GRANTED_IN_PARENT")


def test_organisation_bearer_must_be_named(harness: Harness, client: DelegationClient) -> None:
    org = Bearer(BearerType.ORGANIZATION, "b1475f65-236c-58b8-96e1-e1778b43beb7")
    parent = harness.parent(scopes=(DELEGATION_SCOPE, "warehouse.items.rw"), bearer=org)

    response = client.delegate(
        parent, "billing", [f"Org/{org.id}.warehouse.items.r", "Org.warehouse.items.rw"]
    )
    assert list(response.scopes) == ["warehouse.items.r", "warehouse.items.rw"]
    assert response.bearer.type == 2 and response.bearer.id == org.id

    details = refused(lambda: client.delegate(parent, "billing", ["warehouse.items.r"]))
    assert (details.code, details.reason) == (INVALID, "DIFFERENT_BEARER_TYPES")


def test_parent_without_the_delegation_scope_cannot_delegate(
    harness: Harness, client: DelegationClient
) -> None:
    parent = harness.parent(scopes=("warehouse.items.rw",))
    details = refused(lambda: client.delegate(parent, "billing", ["warehouse.items.r"]))
    assert (details.code, details.reason) == (DENIED, "MISSING_DELEGATION_SCOPE")


def test_a_delegated_token_can_never_be_a_parent(harness: Harness, client: DelegationClient) -> None:
    child = client.delegate(harness.parent(), "gateway", ["warehouse.items.r"]).access_token
    details = refused(lambda: client.delegate(child, "billing", ["warehouse.items.r"]))
    assert (details.code, details.reason) == (DENIED, "DELEGATION_ACCESS_TOKEN_CANNOT_DELEGATE")


def test_unknown_client(harness: Harness, client: DelegationClient) -> None:
    details = refused(lambda: client.delegate(harness.parent(), "nobody", ["warehouse.items.r"]))
    assert (details.code, details.reason) == (INVALID, "UNKNOWN_CLIENT")
    assert details.violations[0][0] == "client_id"


@pytest.mark.parametrize(
    "token",
    ["", "not-a-jwt", "a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."],
)
def test_bad_parent_is_unauthenticated(client: DelegationClient, token: str) -> None:
    details = refused(lambda: client.delegate(token, "billing", ["warehouse.items.r"]))
    assert (details.code, details.reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_PARENT_TOKEN")


class _TwoHoursAgo:
    def now(self) -> int:
        return int(time.time()) - 7200


def test_expired_parent_is_unauthenticated(harness: Harness, client: DelegationClient) -> None:
    issuer = DevUpstreamIssuer(harness.upstream.issuer, key=harness.upstream.key, clock=_TwoHoursAgo())
    parent = issuer.mint("alice", (DELEGATION_SCOPE, "warehouse.items.r"), "gateway", lifetime_seconds=3600)
    details = refused(lambda: client.delegate(parent, "billing", ["warehouse.items.r"]))
    assert (details.code, details.reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_PARENT_TOKEN")


def test_revoked_parent_is_unauthenticated_with_the_same_message(
    harness: Harness, client: DelegationClient
) -> None:
    parent = harness.parent()
    client.delegate(parent, "billing", ["warehouse.items.r"])
    client.revoke(parent)
    revoked = refused(lambda: client.delegate(parent, "billing", ["warehouse.items.r"]))
    garbage = refused(lambda: client.delegate("x.y.z", "billing", ["warehouse.items.r"]))
    assert revoked.code == grpc.StatusCode.UNAUTHENTICATED
    assert (revoked.reason, revoked.message) == (garbage.reason, garbage.message)


def test_revoked_parent_is_unauthenticated_even_when_its_scopes_are_also_wrong(
    harness: Harness, client: DelegationClient
) -> None:
    parent = harness.parent()
    client.revoke(parent)
    details = refused(lambda: client.delegate(parent, "billing", ["warehouse.items.rwx"]))
    assert (details.code, details.reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_PARENT_TOKEN")


def test_omitted_scopes_grant_everything_the_client_may_hold(
    harness: Harness, client: DelegationClient
) -> None:
    response = client.delegate(harness.parent(), "billing", [])
    # billing may hold directory.person.r (parent has rw: downgraded) and warehouse.items.rw;
    # never the delegation scope.
    assert sorted(response.scopes) == ["directory.person.r", "warehouse.items.rw"]


def test_omitted_scopes_with_nothing_grantable_is_an_error(
    harness: Harness, client: DelegationClient
) -> None:
    parent = harness.parent(scopes=(DELEGATION_SCOPE, "https://api.publiq.be/auth/uitpas"))
    details = refused(lambda: client.delegate(parent, "search", []))
    assert (details.code, details.reason) == (DENIED, "NO_GRANTABLE_SCOPES")


def test_validate_only_mints_and_records_nothing(harness: Harness, client: DelegationClient) -> None:
    parent = harness.parent()
    response = client.delegate(parent, "billing", ["warehouse.items.r"], validate_only=True)
    assert response.access_token == "" and response.token_id == ""
    assert list(response.scopes) == ["warehouse.items.r"]
    chain = client.introspect(parent).chain_id
    details = refused(lambda: client.get_chain(chain))
    assert details.code == grpc.StatusCode.NOT_FOUND

    failing = refused(lambda: client.delegate(parent, "billing", ["warehouse.items.rwx"], validate_only=True))
    assert failing.reason == "INVALID_SCOPE_STRUCTURE"


def test_allow_partial_drops_grant_refusals_and_lists_them(
    harness: Harness, client: DelegationClient
) -> None:
    parent = harness.parent(scopes=(DELEGATION_SCOPE, "warehouse.items.r", "directory.person.rw"))
    response = client.delegate(
        parent,
        "billing",
        ["warehouse.items.r", "warehouse.items.rw", "directory.person.rw", "directory.machines.r"],
        allow_partial=True,
    )
    assert list(response.scopes) == ["warehouse.items.r"]
    assert [(r.scope, r.reason) for r in response.refused_scopes] == [
        ("warehouse.items.rw", "SCOPE_WAS_NOT_GRANTED_IN_PARENT"),
        ("directory.person.rw", "SCOPE_NOT_ALLOWED_FOR_CLIENT"),
        ("directory.machines.r", "UNAVAILABLE_SCOPE_FOR_BEARER_TYPE"),
    ]


def test_allow_partial_still_fails_on_structural_errors(harness: Harness, client: DelegationClient) -> None:
    details = refused(
        lambda: client.delegate(harness.parent(), "billing", ["warehouse.items.r", "bad"], allow_partial=True)
    )
    assert (details.code, details.reason) == (INVALID, "INVALID_SCOPE_STRUCTURE")


def test_allow_partial_with_nothing_left_fails_with_the_reasons(
    harness: Harness, client: DelegationClient
) -> None:
    details = refused(
        lambda: client.delegate(harness.parent(), "billing", ["directory.person.rw"], allow_partial=True)
    )
    assert (details.code, details.reason) == (DENIED, "SCOPE_NOT_ALLOWED_FOR_CLIENT")


def test_child_never_outlives_its_parent(harness: Harness, client: DelegationClient) -> None:
    parent = harness.parent(lifetime_seconds=120)
    parent_exp = claims_of(parent)["exp"]
    response = client.delegate(parent, "billing", ["warehouse.items.r"])  # default lifetime 900 s
    assert response.expire_time.seconds == parent_exp == claims_of(response.access_token)["exp"]


def test_requested_lifetime_beyond_the_parent_is_refused(harness: Harness, client: DelegationClient) -> None:
    parent = harness.parent(lifetime_seconds=120)
    details = refused(lambda: client.delegate(parent, "billing", ["warehouse.items.r"], lifetime_seconds=600))
    assert (details.code, details.reason) == (DENIED, "EXPIRES_AFTER_PARENT")


@pytest.mark.parametrize("seconds", [0, -5])
def test_non_positive_lifetime_is_invalid(harness: Harness, client: DelegationClient, seconds: int) -> None:
    details = refused(
        lambda: client.delegate(harness.parent(), "billing", ["warehouse.items.r"], lifetime_seconds=seconds)
    )
    assert (details.code, details.reason) == (INVALID, "INVALID_LIFETIME")


def test_requested_lifetime_is_capped_by_the_maximum(harness: Harness, client: DelegationClient) -> None:
    maximum = harness.app.config.max_lifetime_seconds
    parent = harness.parent(lifetime_seconds=maximum * 3)
    before = int(time.time())
    response = client.delegate(parent, "billing", ["warehouse.items.r"], lifetime_seconds=maximum * 2)
    assert before + maximum <= response.expire_time.seconds <= int(time.time()) + maximum
