"""Sender-constrained children (RFC 9449 DPoP): proofs made with joserfc, an implementation independent
of ours, checked fully by the token endpoint (htm, htu, iat window, jti replay in Redis, ath); a bound
parent's child needs proof of the parent's key and stays bound (never keycloak#50963's unbound child)."""

from __future__ import annotations

import http.client
import json
import logging
import time
import urllib.parse

import grpc
import pytest
import requests
from joserfc.jwk import ECKey

from delegation.v1 import delegation_pb2, delegation_pb2_grpc
from delegation_service.client import error_details
from tests.integration.harness import SERVICE_ISSUER
from tests.oauth.conftest import OAuthService, dpop_proof

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def exchange(service: OAuthService, parent: str, *proofs: str, **extra: str) -> requests.Response:
    headers = dict(FORM)
    if proofs:
        headers["DPoP"] = ", ".join(proofs) if len(proofs) > 1 else proofs[0]
    return requests.post(
        service.token_url, data=service.exchange_form(parent, **extra), headers=headers, timeout=5
    )


@pytest.fixture
def key() -> ECKey:
    return ECKey.generate_key("P-256")


def test_a_proof_binds_the_child_of_an_unbound_parent_to_its_key(
    oauth_service: OAuthService, key: ECKey
) -> None:
    answer = exchange(oauth_service, oauth_service.parent(), dpop_proof(key, oauth_service.token_url))

    token = answer.json()
    assert answer.status_code == 200, token
    assert token["token_type"] == "DPoP"
    introspected = requests.post(
        oauth_service.base_url + "/oauth2/introspect",
        data={"token": token["access_token"]},
        headers={**FORM, "Authorization": f"Bearer {oauth_service.operator_secret}"},
        timeout=5,
    ).json()
    assert introspected["cnf"] == {"jkt": key.thumbprint()}
    assert introspected["token_type"] == "DPoP"


def test_a_bound_parent_gives_a_child_bound_to_the_same_key(oauth_service: OAuthService, key: ECKey) -> None:
    parent = oauth_service.parent(cnf={"jkt": key.thumbprint()})
    answer = exchange(oauth_service, parent, dpop_proof(key, oauth_service.token_url, token=parent))

    assert answer.status_code == 200, answer.json()
    child = oauth_service.grpc().introspect(answer.json()["access_token"])
    assert child.active


def test_the_caller_may_bind_the_child_to_the_subsystems_key(oauth_service: OAuthService, key: ECKey) -> None:
    subsystem = ECKey.generate_key("P-256")
    parent = oauth_service.parent(cnf={"jkt": key.thumbprint()})
    answer = exchange(
        oauth_service, parent, dpop_proof(key, oauth_service.token_url), dpop_jkt=subsystem.thumbprint()
    )

    assert answer.status_code == 200, answer.json()
    introspected = requests.post(
        oauth_service.base_url + "/oauth2/introspect",
        data={"token": answer.json()["access_token"]},
        headers={**FORM, "Authorization": f"Bearer {oauth_service.operator_secret}"},
        timeout=5,
    ).json()
    assert introspected["cnf"] == {"jkt": subsystem.thumbprint()}


def test_a_bound_parent_without_proof_is_refused(oauth_service: OAuthService, key: ECKey) -> None:
    body = exchange(oauth_service, oauth_service.parent(cnf={"jkt": key.thumbprint()})).json()
    assert (body["error"], body["reason"]) == ("invalid_grant", "PROOF_OF_POSSESSION_REQUIRED")


def test_a_proof_by_another_key_is_refused(oauth_service: OAuthService, key: ECKey) -> None:
    other = ECKey.generate_key("P-256")
    parent = oauth_service.parent(cnf={"jkt": key.thumbprint()})
    body = exchange(oauth_service, parent, dpop_proof(other, oauth_service.token_url)).json()
    assert (body["error"], body["reason"]) == ("invalid_grant", "PROOF_OF_POSSESSION_REQUIRED")


def test_a_replayed_proof_is_refused(oauth_service: OAuthService, key: ECKey) -> None:
    proof = dpop_proof(key, oauth_service.token_url)
    assert exchange(oauth_service, oauth_service.parent(), proof).status_code == 200

    body = exchange(oauth_service, oauth_service.parent(), proof).json()
    assert (body["error"], body["reason"]) == ("invalid_dpop_proof", "INVALID_DPOP_PROOF")


@pytest.mark.parametrize(
    "kind", ["another URL", "another method", "too old", "in the future", "another token", "unsigned"]
)
def test_a_proof_not_for_this_request_is_refused(oauth_service: OAuthService, key: ECKey, kind: str) -> None:
    url = oauth_service.token_url
    now = int(time.time())
    proof = {
        "another URL": lambda: dpop_proof(key, oauth_service.base_url + "/oauth2/revoke"),
        "another method": lambda: dpop_proof(key, url, method="GET"),
        "too old": lambda: dpop_proof(key, url, iat=now - 600),
        "in the future": lambda: dpop_proof(key, url, iat=now + 600),
        "another token": lambda: dpop_proof(key, url, token=oauth_service.parent()),
        "unsigned": lambda: dpop_proof(key, url).rsplit(".", 1)[0] + ".",
    }[kind]()

    body = exchange(oauth_service, oauth_service.parent(), proof).json()
    assert (body["error"], body["reason"]) == ("invalid_dpop_proof", "INVALID_DPOP_PROOF")


def test_two_dpop_header_fields_are_refused(oauth_service: OAuthService, key: ECKey) -> None:
    body = urllib.parse.urlencode(oauth_service.exchange_form(oauth_service.parent()))
    connection = http.client.HTTPConnection(
        "127.0.0.1", urllib.parse.urlsplit(oauth_service.base_url).port, timeout=5
    )
    try:
        connection.putrequest("POST", "/oauth2/token")
        connection.putheader("Content-Type", FORM["Content-Type"])
        connection.putheader("Content-Length", str(len(body)))
        connection.putheader("DPoP", dpop_proof(key, oauth_service.token_url))
        connection.putheader("DPoP", dpop_proof(key, oauth_service.token_url))
        connection.endheaders(body.encode())
        reply = connection.getresponse()
        answer = json.loads(reply.read())
    finally:
        connection.close()
    assert reply.status == 400
    assert answer["reason"] == "INVALID_DPOP_PROOF"


def test_over_grpc_a_bound_parent_is_refused_without_proof(oauth_service: OAuthService, key: ECKey) -> None:
    parent = oauth_service.parent(cnf={"jkt": key.thumbprint()})
    with oauth_service.grpc() as client, pytest.raises(grpc.RpcError) as raised:
        client.delegate(parent, "billing", ["warehouse.items.r"])

    details = error_details(raised.value)
    assert details.code is grpc.StatusCode.UNAUTHENTICATED
    assert details.reason == "PROOF_OF_POSSESSION_REQUIRED"


def test_a_parent_bound_by_a_method_we_cannot_check_is_refused(oauth_service: OAuthService) -> None:
    parent = oauth_service.parent(cnf={"jwk": "whatever"})
    body = exchange(oauth_service, parent).json()
    assert (body["error"], body["reason"]) == ("invalid_grant", "INVALID_PARENT_TOKEN")


def test_over_grpc_a_proof_in_metadata_binds_and_audience_narrows(
    oauth_service: OAuthService, key: ECKey
) -> None:
    parent = oauth_service.parent(cnf={"jkt": key.thumbprint()})
    url = SERVICE_ISSUER + "/delegation.v1.DelegationService/Delegate"
    with grpc.insecure_channel(f"127.0.0.1:{oauth_service.running.port}") as channel:
        stub = delegation_pb2_grpc.DelegationServiceStub(channel)
        request = delegation_pb2.DelegateRequest(
            parent_token=parent, client_id="billing", audience="warehouse"
        )
        child = stub.Delegate(request, timeout=5, metadata=(("dpop", dpop_proof(key, url, token=parent)),))
        with pytest.raises(grpc.RpcError) as elsewhere:
            stub.Delegate(request, timeout=5, metadata=(("dpop", dpop_proof(key, url + "x")),))

    assert child.token_type == "DPoP"
    assert list(child.scopes) == ["warehouse.items.rw"]
    assert error_details(elsewhere.value).reason == "INVALID_DPOP_PROOF"
    introspected = oauth_service.grpc().introspect(child.access_token)
    assert list(introspected.audiences) == ["warehouse"]


def test_binding_and_refused_proofs_are_audited(
    oauth_service: OAuthService, key: ECKey, caplog: pytest.LogCaptureFixture
) -> None:
    proof = dpop_proof(key, oauth_service.token_url)
    with caplog.at_level(logging.INFO, logger="delegation_service.audit"):
        assert exchange(oauth_service, oauth_service.parent(), proof).status_code == 200
        assert exchange(oauth_service, oauth_service.parent(), proof).status_code == 400

    events = [r.__dict__ for r in caplog.records if getattr(r, "audit", False)]
    minted = [e for e in events if e["outcome"] == "minted"]
    denied = [e for e in events if e["outcome"] == "denied" and e["reason"] == "INVALID_DPOP_PROOF"]
    assert minted[-1]["cnf"] == {"jkt": key.thumbprint()}
    assert "replay" in denied[-1]["detail"]
