"""Introspection and revocation through a real gRPC channel on a real Redis."""

from __future__ import annotations

import json
import threading
import time

import grpc
import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from delegation.v1 import delegation_pb2
from delegation_service.client import DelegationClient, error_details
from tests.integration.harness import SERVICE_ISSUER, Harness


def mint_children(harness: Harness, client: DelegationClient, parent: str, count: int) -> list[str]:
    return [client.delegate(parent, "billing", ["warehouse.items.r"]).access_token for _ in range(count)]


def test_introspect_an_active_child_returns_its_claims(harness: Harness, client: DelegationClient) -> None:
    parent = harness.parent()
    minted = client.delegate(parent, "billing", ["warehouse.items.r"])
    answer = client.introspect(minted.access_token)

    assert answer.active
    assert list(answer.scopes) == ["warehouse.items.r"]
    assert answer.client_id == "billing" and answer.actor_client_id == "gateway"
    assert answer.subject == "alice" and answer.issuer == SERVICE_ISSUER
    assert answer.token_id == minted.token_id and answer.chain_id == minted.chain_id
    assert answer.parent_token_id == client.introspect(parent).token_id
    assert answer.kind == 2  # TOKEN_KIND_DELEGATED


def test_an_inactive_token_answers_only_active_false(client: DelegationClient) -> None:
    answer = client.introspect("not.a.token")
    assert answer == type(answer)(active=False)


def test_revoking_a_parent_makes_every_child_inactive_at_once(
    harness: Harness, client: DelegationClient
) -> None:
    parent = harness.parent()
    children = mint_children(harness, client, parent, 25)
    assert all(client.introspect(c).active for c in children)

    client.revoke(parent)

    assert not client.introspect(parent).active
    assert not any(client.introspect(c).active for c in children)


def test_revoking_a_child_leaves_parent_and_siblings_active(
    harness: Harness, client: DelegationClient
) -> None:
    parent = harness.parent()
    first, second, third = mint_children(harness, client, parent, 3)

    client.revoke(second)

    assert not client.introspect(second).active
    assert client.introspect(first).active and client.introspect(third).active
    assert client.introspect(parent).active
    client.delegate(parent, "billing", ["warehouse.items.r"])  # the parent can still delegate


def test_revoking_is_idempotent_and_always_ok(harness: Harness, client: DelegationClient) -> None:
    parent = harness.parent()
    (child,) = mint_children(harness, client, parent, 1)
    for _ in range(3):
        client.revoke(child)
        client.revoke(parent)
    client.revoke("garbage")  # RFC 7009: an invalid token is not an error
    assert not client.introspect(child).active


def test_operator_revoke_chain_reports_the_blast_radius(harness: Harness, client: DelegationClient) -> None:
    parent = harness.parent()
    children = mint_children(harness, client, parent, 4)
    client.delegate(parent, "search", ["warehouse.items.r"])
    chain = client.introspect(parent).chain_id

    dry = client.revoke_chain(chain, dry_run=True)
    assert (dry.revoked_token_count, list(dry.client_ids), dry.dry_run) == (
        6,
        ["billing", "gateway", "search"],
        True,
    )
    assert all(client.introspect(c).active for c in children)

    done = client.revoke_chain(chain, justification="test")
    assert done.revoked_token_count == 6 and done.revoke_time.seconds > 0
    assert not any(client.introspect(c).active for c in children)
    shown = client.get_chain(chain)
    assert shown.revoked and {t.state for t in shown.tokens} == {2}  # TOKEN_STATE_REVOKED


def test_operator_revoke_one_token_of_a_chain(harness: Harness, client: DelegationClient) -> None:
    parent = harness.parent()
    first, second = mint_children(harness, client, parent, 2)
    chain = client.introspect(parent).chain_id
    target = client.introspect(first).token_id

    response = client.revoke_chain(chain, token_id=target)

    assert response.revoked_token_count == 1 and list(response.client_ids) == ["billing"]
    assert not client.introspect(first).active and client.introspect(second).active


def test_get_chain_lists_root_first_with_states(harness: Harness, client: DelegationClient) -> None:
    parent = harness.parent()
    first, second = mint_children(harness, client, parent, 2)
    client.revoke(first)
    chain = client.introspect(parent).chain_id

    shown = client.get_chain(chain)

    assert [t.kind for t in shown.tokens] == [1, 2, 2]
    states = {t.token_id: t.state for t in shown.tokens}
    assert states[client.introspect(second).token_id] == 1  # ACTIVE
    assert sorted(states.values()) == [1, 1, 2]


def test_subject_and_client_horizons(harness: Harness, client: DelegationClient) -> None:
    parent = harness.parent(subject="carol")
    (child,) = mint_children(harness, client, parent, 1)
    client.revoke_subject("carol")
    assert not client.introspect(child).active and not client.introspect(parent).active

    time.sleep(1.1)  # horizons have one-second resolution: a token of the next second is after it
    fresh = harness.parent(subject="carol")
    assert client.introspect(mint_children(harness, client, fresh, 1)[0]).active

    other = harness.parent(subject="dave")
    (held_by_search,) = [client.delegate(other, "search", ["warehouse.items.r"]).access_token]
    (held_by_billing,) = mint_children(harness, client, other, 1)
    client.revoke_client("search")
    assert not client.introspect(held_by_search).active
    assert client.introspect(held_by_billing).active


def test_operator_calls_require_operator_credentials(harness: Harness) -> None:
    with harness.client(operator=False) as anonymous, pytest.raises(grpc.RpcError) as info:
        anonymous.get_chain("anything")
    details = error_details(info.value)
    assert (details.code, details.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "OPERATOR_CREDENTIALS_REQUIRED",
    )


def test_unknown_chain_is_not_found(client: DelegationClient) -> None:
    with pytest.raises(grpc.RpcError) as info:
        client.get_chain("no-such-chain")
    assert error_details(info.value).reason == "CHAIN_NOT_FOUND"


def test_child_verifies_with_an_independent_library_against_get_jwks(
    harness: Harness, client: DelegationClient
) -> None:
    minted = client.delegate(harness.parent(), "billing", ["warehouse.items.r", "directory.person.r"])
    keys = KeySet.import_key_set(json.loads(client.jwks().jwks_json))

    token = jose_jwt.decode(minted.access_token, keys, algorithms=["ES256"])

    assert token.header["typ"] == "at+jwt"
    jose_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": SERVICE_ISSUER},
        aud={"essential": True, "values": ["directory", "warehouse"]},
        exp={"essential": True},
        sub={"essential": True, "value": "alice"},
    ).validate(token.claims)
    assert sorted(token.claims["aud"]) == ["directory", "warehouse"]


def test_jwks_holds_no_private_members(client: DelegationClient) -> None:
    jwks = json.loads(client.jwks().jwks_json)
    assert jwks["keys"] and all(not {"d", "p", "q", "dp", "dq", "qi"} & set(k) for k in jwks["keys"])
    assert [k["kid"] for k in jwks["keys"]] == list(client.jwks().key_ids)


def test_watch_revocations_streams_in_order_and_resumes_from_a_cursor(
    harness: Harness, client: DelegationClient
) -> None:
    parents = [harness.parent() for _ in range(3)]
    for parent in parents:
        mint_children(harness, client, parent, 1)
    chains = [client.introspect(p).chain_id for p in parents]

    received: list[tuple[str, str]] = []
    stream = client.public.WatchRevocations(delegation_pb2.WatchRevocationsRequest(), timeout=10)
    ready = threading.Event()

    def follow() -> None:
        ready.set()
        for event in stream:
            received.append((event.chain_id, event.cursor))
            if [c for c, _ in received if c in chains] == chains:
                stream.cancel()
                return

    follower = threading.Thread(target=follow)
    follower.start()
    ready.wait()
    for parent in parents:
        client.revoke(parent)
    follower.join(timeout=10)
    stream.cancel()
    assert [c for c, _ in received if c in chains] == chains

    # A follower that resumes after the first revocation's cursor gets the other two.
    first_cursor = next(cursor for chain, cursor in received if chain == chains[0])
    resumed = client.public.WatchRevocations(
        delegation_pb2.WatchRevocationsRequest(cursor=first_cursor),
        timeout=10,
    )
    later: list[str] = []
    for event in resumed:
        later.append(event.chain_id)
        if len([c for c in later if c in chains]) == 2:
            resumed.cancel()
            break
    assert [c for c in later if c in chains] == chains[1:]
