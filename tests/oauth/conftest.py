"""The service with its OAuth HTTP port over the suite's real redis-server (DPoP replay cache included),
and helpers that build what third-party callers send: authlib sessions, joserfc DPoP proofs."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import pytest
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jws
from joserfc.jwk import ECKey

from delegation_service.adapters.jws import ACCESS_TOKEN_TYP
from delegation_service.adapters.jwt_codec import compact_jws
from delegation_service.adapters.upstream_dev import DevUpstreamIssuer
from delegation_service.app import RunningApplication
from delegation_service.client import DelegationClient
from delegation_service.domain.dpop import access_token_hash
from devtools.redis_server import RedisServer
from tests.integration.harness import DELEGATION_SCOPE, build_test_app

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
OAUTH_SERVERS = ("threads", "granian")
"""Every test of the OAuth port runs on both of its servers (``oauth.server``), through real sockets."""


@dataclass
class OAuthService:
    """The running application and how to reach it."""

    running: RunningApplication
    upstream: DevUpstreamIssuer
    operator_secret: str

    @property
    def base_url(self) -> str:
        assert self.running.oauth is not None
        return self.running.oauth.base_url

    @property
    def token_url(self) -> str:
        return self.base_url + "/oauth2/token"

    def grpc(self) -> DelegationClient:
        return DelegationClient(f"127.0.0.1:{self.running.port}", 5.0, self.operator_secret)

    def session(self) -> OAuth2Session:
        """authlib's OAuth 2 client as a gateway would configure it (a public client)."""
        return OAuth2Session(client_id="gateway", token_endpoint_auth_method="none")

    def parent(
        self,
        scopes: tuple[str, ...] = (DELEGATION_SCOPE, "directory.person.rw", "warehouse.items.rw"),
        cnf: Mapping[str, str] | None = None,
    ) -> str:
        """A fresh upstream parent, DPoP-bound when ``cnf`` is given."""
        if cnf is None:
            return self.upstream.mint(
                subject="alice", scopes=scopes, client_id="gateway", lifetime_seconds=600
            )
        now = int(time.time())
        claims = {
            "iss": self.upstream.issuer,
            "sub": "alice",
            "client_id": "gateway",
            "scope": " ".join(scopes),
            "iat": now,
            "exp": now + 600,
            "jti": secrets.token_urlsafe(16),
            "cnf": dict(cnf),
        }
        key = self.upstream.key
        return compact_jws(
            {"alg": key.alg, "kid": key.kid, "typ": ACCESS_TOKEN_TYP}, json.dumps(claims).encode(), key
        )

    def exchange_form(self, parent: str, **extra: str) -> dict[str, str]:
        return {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": parent,
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "audience": "billing",
            **extra,
        }


def dpop_proof(
    key: ECKey,
    url: str,
    *,
    method: str = "POST",
    token: str | None = None,
    iat: int | None = None,
    jti: str | None = None,
) -> str:
    """A DPoP proof (RFC 9449 §4.2) made with joserfc, an implementation independent of ours."""
    claims: dict[str, object] = {
        "jti": jti or secrets.token_urlsafe(12),
        "htm": method,
        "htu": url,
        "iat": int(time.time()) if iat is None else iat,
    }
    if token is not None:
        claims["ath"] = access_token_hash(token)
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.as_dict(private=False)}
    return jws.serialize_compact(header, json.dumps(claims), key)


@pytest.fixture(scope="module", params=OAUTH_SERVERS)
def oauth_server(request: pytest.FixtureRequest) -> str:
    """The ``oauth.server`` a module's tests run on (each module runs on both)."""
    return str(request.param)


@pytest.fixture(scope="module")
def oauth_service(redis_server: RedisServer, oauth_server: str) -> Iterator[OAuthService]:
    app, upstream, secret = build_test_app(
        store="redis",
        redis_url=redis_server.url,
        redis_key_prefix="oauth",
        redis_allow_unsafe_persistence=True,
        admin_listen="127.0.0.1:0",
        oauth_listen="127.0.0.1:0",
        oauth_server=oauth_server,
    )
    running = app.serve(admin=True)
    assert isinstance(running, RunningApplication)
    yield OAuthService(running, upstream, secret)
    running.stop(0)
