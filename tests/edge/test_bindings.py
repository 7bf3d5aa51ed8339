"""The edge checks sender-constrained children (RFC 9449 DPoP proofs made with joserfc) and audience
narrowing, through the embeddable verifier and the forward-auth face nginx and Traefik call."""

from __future__ import annotations

import dataclasses
import urllib.request
from collections.abc import Iterator

import pytest
import requests
from joserfc.jwk import ECKey

from delegation_service.edge.verifier import Outcome, RequestFacts, RouteRule
from delegation_service.transport.oauth.protocol import OAuthServer
from tests.edge.conftest import EdgeFactory
from tests.integration.harness import Harness
from tests.oauth.conftest import ACCESS_TOKEN_TYPE, OAUTH_SERVERS, TOKEN_EXCHANGE, dpop_proof

RESOURCE = "https://api.example/items/42"


@pytest.fixture(params=OAUTH_SERVERS)
def oauth(service: Harness, request: pytest.FixtureRequest) -> Iterator[OAuthServer]:
    """The OAuth port of the service on each of its servers (``oauth.server``)."""
    config = dataclasses.replace(service.app.config, oauth_server=request.param)
    server = dataclasses.replace(service.app, config=config).oauth_server("127.0.0.1:0").start()
    yield server
    server.stop()


def exchange(oauth: OAuthServer, parent: str, **extra: str) -> str:
    form = {
        "grant_type": TOKEN_EXCHANGE,
        "subject_token": parent,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "audience": "billing",
        **extra,
    }
    answer = requests.post(oauth.base_url + "/oauth2/token", data=form, timeout=5)
    assert answer.status_code == 200, answer.json()
    token: str = answer.json()["access_token"]
    return token


def test_a_dpop_bound_child_passes_only_with_a_proof_by_its_key(
    service: Harness, oauth: OAuthServer, start_edge_for: EdgeFactory
) -> None:
    key, other = ECKey.generate_key("P-256"), ECKey.generate_key("P-256")
    child = exchange(oauth, service.parent(), scope="warehouse.items.r", dpop_jkt=key.thumbprint())
    verifier = start_edge_for().verifier

    def check(scheme: str = "DPoP", *proofs: str, url: str = RESOURCE, method: str = "GET") -> Outcome:
        facts = RequestFacts(method=method, url=url, dpop_proofs=proofs)
        return verifier.check(f"{scheme} {child}", "/items/42", facts).outcome

    assert check("DPoP", dpop_proof(key, RESOURCE, method="GET", token=child)) is Outcome.ALLOW
    assert check("Bearer", dpop_proof(key, RESOURCE, method="GET", token=child)) is Outcome.UNAUTHENTICATED
    assert check("DPoP") is Outcome.UNAUTHENTICATED
    assert check("DPoP", dpop_proof(other, RESOURCE, method="GET", token=child)) is Outcome.UNAUTHENTICATED
    assert check("DPoP", dpop_proof(key, RESOURCE, method="GET")) is Outcome.UNAUTHENTICATED  # no ath
    assert check("DPoP", dpop_proof(key, RESOURCE, token=child), method="GET") is Outcome.UNAUTHENTICATED
    replayed = dpop_proof(key, RESOURCE, method="GET", token=child)
    assert check("DPoP", replayed) is Outcome.ALLOW
    assert check("DPoP", replayed) is Outcome.UNAUTHENTICATED
    elsewhere = dpop_proof(key, "https://api.example/other", method="GET", token=child)
    assert check("DPoP", elsewhere) is Outcome.UNAUTHENTICATED


def test_forward_auth_rebuilds_the_url_the_proof_names(
    service: Harness, oauth: OAuthServer, start_edge_for: EdgeFactory
) -> None:
    key = ECKey.generate_key("P-256")
    child = exchange(oauth, service.parent(), scope="warehouse.items.r", dpop_jkt=key.thumbprint())
    edge = start_edge_for()

    def auth(proof: str) -> tuple[int, str]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{edge.http_port}/auth",
            headers={
                "Authorization": f"DPoP {child}",
                "DPoP": proof,
                "X-Original-URI": "/items/42?x=1",
                "X-Forwarded-Host": "api.example",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Method": "GET",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                return reply.status, ""
        except urllib.error.HTTPError as refused:
            return refused.code, refused.headers.get("WWW-Authenticate", "")

    assert auth(dpop_proof(key, RESOURCE, method="GET", token=child)) == (200, "")
    status, challenge = auth(dpop_proof(key, RESOURCE, method="POST", token=child))
    assert status == 401
    assert challenge.startswith("DPoP ") and 'error="invalid_dpop_proof"' in challenge


def test_a_child_narrowed_to_one_audience_is_refused_by_the_others_routes(
    service: Harness, oauth: OAuthServer, start_edge_for: EdgeFactory
) -> None:
    narrowed = exchange(oauth, service.parent(), resource="warehouse")
    broad = exchange(oauth, service.parent())
    verifier = start_edge_for(
        routes=(RouteRule("/items", "warehouse.items.r"), RouteRule("/people", "directory.person.r"))
    ).verifier

    assert verifier.check(f"Bearer {narrowed}", "/items").outcome is Outcome.ALLOW
    assert verifier.check(f"Bearer {narrowed}", "/people").outcome is Outcome.FORBIDDEN
    assert verifier.check(f"Bearer {broad}", "/people").outcome is Outcome.ALLOW
    directory_edge = start_edge_for(audience="directory").verifier
    assert directory_edge.check(f"Bearer {narrowed}", "/").outcome is Outcome.UNAUTHENTICATED
    assert directory_edge.check(f"Bearer {broad}", "/").outcome is Outcome.ALLOW
