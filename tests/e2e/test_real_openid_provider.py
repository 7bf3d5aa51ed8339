"""The service against a real OpenID provider (issue 18.3): panva's oidc-provider, from npm.

``delegation-service serve`` (a subprocess, over a real Redis) trusts the provider by its issuer URL
alone, so its keys come through OpenID Connect discovery and the remote JWKS. The provider issues JWT
access tokens for ``client_credentials`` with a resource indicator, signed ES256 (a key with ``alg``) or
RS256 and PS256 (one RSA key published *without* ``alg``). The flow: delegate from its tokens, verify the
child with PyJWT (not our code) against the service's JWKS, introspect, revoke the chain, restart the
service, still revoked; an organisation id claim mapped to the bearer; a key rotation on the provider.

Node's ECDSA signatures are not normalised (half of them are high-S), so the issuer is configured with
``allow_high_s = true``, as an operator trusting oidc-provider must (README "Claims of your identity
provider").
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest

from delegation.v1 import delegation_pb2
from delegation_service.adapters.jwt_codec import IssuerRules, JwtVerifier, TrustedIssuer
from delegation_service.adapters.keys import KeySet, generate_signing_key, load_remote_jwks
from delegation_service.client import DelegationClient, error_details
from delegation_service.dev import demo_catalog_path
from delegation_service.domain.errors import ParentRejected
from delegation_service.transport.auth import operator_secret_digest
from devtools.node_oidc_provider import AUDIENCE, Client, NodeOidcProvider, node_missing_reason
from devtools.redis_server import free_loopback_port
from tests.e2e.serving import health_serving

pytestmark = pytest.mark.redis

CLI = (sys.executable, "-m", "delegation_service.cli")
WAIT_SECONDS = 30.0
SERVICE_ISSUER = "https://delegation.oidc.invalid"
PARENT_SCOPES = "directory.delegations.rw warehouse.items.rw"
ORG = delegation_pb2.BEARER_TYPE_ORGANIZATION
PERSON = delegation_pb2.BEARER_TYPE_PERSON


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeOidcProvider]:
    reason = node_missing_reason()
    if reason is not None and "node is not installed" in reason:
        pytest.skip(reason)
    if reason is not None:
        pytest.fail(reason, pytrace=False)
    running = NodeOidcProvider(
        tmp_path_factory.mktemp("oidc-provider"),
        [
            Client("gateway", PARENT_SCOPES),
            Client("partner", PARENT_SCOPES, org_id="acme"),
            Client("machine", PARENT_SCOPES),
        ],
        ["directory.delegations.rw", "warehouse.items.rw"],
    )
    yield running
    running.stop()


@dataclass
class Service:
    """One ``serve`` process; restartable on the same port, configuration and Redis."""

    config: Path
    port: int
    operator_secret: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DELEGATION_")}
        env["DELEGATION_REDIS_ALLOW_UNSAFE_PERSISTENCE"] = "true"  # the suite's Redis keeps nothing on disk
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*CLI, "serve", "--config", str(self.config)], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + WAIT_SECONDS
        while not health_serving(self.address):  # Redis answers, the provider's keys are loaded
            assert self.process.poll() is None, self.log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, "serve never became ready"
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=WAIT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=WAIT_SECONDS)

    def client(self) -> DelegationClient:
        return DelegationClient(self.address, timeout=10, operator_token=self.operator_secret)


@pytest.fixture(scope="module")
def service(
    provider: NodeOidcProvider, redis_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    folder = tmp_path_factory.mktemp("serve")
    subprocess.run(
        [*CLI, "keys", "generate", "--out", str(folder / "signing.pem")],
        check=True,
        capture_output=True,
        timeout=30,
    )
    port, secret = free_loopback_port(), secrets.token_urlsafe(24)
    config = folder / "config.toml"
    config.write_text(
        f"""
[server]
listen = "127.0.0.1:{port}"
drain_seconds = 0
[admin]
listen = ""
[access]
mode = "open"
[operators]
token_sha256 = ["{operator_secret_digest(secret)}"]
[issuer]
name = "{SERVICE_ISSUER}"
signing_key_files = ["signing.pem"]
[catalog]
file = "{demo_catalog_path().as_posix()}"
[redis]
url = "{redis_server.url}"
key_prefix = "oidc-{secrets.token_hex(4)}"

# The provider by its issuer URL alone: discovery, then its jwks_uri (plain HTTP: loopback only).
[[trusted_issuers]]
issuer = "{provider.issuer}"
audience = "{AUDIENCE}"
algorithms = ["ES256", "RS256", "PS256"]
allow_high_s = true
unknown_kid_interval_seconds = 0

[trusted_issuers.claims]
bearer_id_claim = "org_id"
bearer_type = "Org"

[trusted_issuers.claims.client_bearers]
machine = "Org/beta"
""",
        encoding="utf-8",
    )
    running = Service(config, port, secret, folder / "serve.log")
    running.start()
    yield running
    running.stop()


def _verify_child(service: Service, token: str) -> dict[str, Any]:
    """The child's claims, verified by PyJWT against the service's published JWKS."""
    with service.client() as client:
        jwks = jwt.PyJWKSet.from_dict(json.loads(client.jwks().jwks_json))
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwks.keys if k.key_id == kid)
    claims: dict[str, Any] = jwt.decode(
        token, key.key, algorithms=[key.algorithm_name], issuer=SERVICE_ISSUER, options={"verify_aud": False}
    )
    return claims


@pytest.mark.parametrize("alg", ["ES256", "RS256", "PS256"])
def test_a_provider_token_delegates_and_the_child_verifies_independently(
    provider: NodeOidcProvider, service: Service, alg: str
) -> None:
    parent = provider.token("gateway", alg)
    assert jwt.get_unverified_header(parent)["alg"] == alg
    with service.client() as client:
        child = client.delegate(parent, "billing", ["warehouse.items.r"])
        introspected = client.introspect(child.access_token)
    claims = _verify_child(service, child.access_token)
    assert claims["client_id"] == "billing"
    assert claims["scope"] == "warehouse.items.r"
    assert claims["act"] == {"sub": "gateway"}  # the provider's client_id claim
    assert introspected.active
    assert introspected.actor_client_id == "gateway"
    # A client_credentials token has no bearer claim: a person named by sub, as before any mapping.
    assert (introspected.bearer.type, introspected.bearer.id) == (PERSON, "gateway")


def test_the_org_id_claim_maps_to_an_organisation_bearer(
    provider: NodeOidcProvider, service: Service
) -> None:
    parent = provider.token("partner", "PS256")  # from the RSA key published without alg
    with service.client() as client:
        child = client.delegate(parent, "billing", ["Org/acme.warehouse.items.r"])
    assert (child.bearer.type, child.bearer.id) == (ORG, "acme")
    assert _verify_child(service, child.access_token)["bearer"] == {"type": "Org", "id": "acme"}


def test_a_client_with_a_fixed_bearer_delegates_its_organisation_scopes(
    provider: NodeOidcProvider, service: Service
) -> None:
    parent = provider.token("machine", "RS256")
    with service.client() as client:
        child = client.delegate(parent, "billing", ["Org/beta.warehouse.items.r"])
        with pytest.raises(grpc.RpcError) as refused:
            client.delegate(parent, "billing", ["Org/acme.warehouse.items.r"])
    assert (child.bearer.type, child.bearer.id) == (ORG, "beta")
    assert error_details(refused.value).reason == "DIFFERENT_BEARER_TYPES"


def test_a_revoked_chain_stays_revoked_across_a_restart(provider: NodeOidcProvider, service: Service) -> None:
    parent = provider.token("gateway", "ES256")
    with service.client() as client:
        child = client.delegate(parent, "billing", ["warehouse.items.r"])
        chain_id = client.introspect(child.access_token).chain_id
        client.revoke_chain(chain_id, justification="oidc-provider end-to-end test")
        assert not client.introspect(child.access_token).active
    service.stop()
    service.start()
    with service.client() as client:
        assert not client.introspect(child.access_token).active
        with pytest.raises(grpc.RpcError) as refused:
            client.delegate(parent, "billing", ["warehouse.items.r"])
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_a_key_rotation_on_the_provider_is_followed(provider: NodeOidcProvider, service: Service) -> None:
    before = {alg: provider.token("gateway", alg) for alg in ("ES256", "PS256")}
    with service.client() as client:
        for parent in before.values():
            client.delegate(parent, "billing", ["warehouse.items.r"])
    provider.rotate()  # new keys, the old ones gone: no overlap
    after = {alg: provider.token("gateway", alg) for alg in ("ES256", "PS256")}
    assert {jwt.get_unverified_header(t)["kid"] for t in after.values()}.isdisjoint(
        jwt.get_unverified_header(t)["kid"] for t in before.values()
    )
    with service.client() as client:
        # The first token of an unknown kid makes the service fetch the provider's JWKS again.
        for parent in after.values():
            assert client.delegate(parent, "billing", ["warehouse.items.r"]).access_token
        # The old keys left the JWKS with that refresh: their tokens no longer verify.
        for parent in before.values():
            with pytest.raises(grpc.RpcError) as refused:
                client.delegate(parent, "billing", ["warehouse.items.r"])
            assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED


def _provider_jwks(provider: NodeOidcProvider) -> dict[str, Any]:
    with urllib.request.urlopen(f"{provider.issuer}/.well-known/openid-configuration", timeout=10) as answer:
        jwks_uri = json.loads(answer.read())["jwks_uri"]
    with urllib.request.urlopen(jwks_uri, timeout=10) as answer:
        return dict(json.loads(answer.read()))


@pytest.mark.parametrize(("algorithms", "accepted"), [(("RS256", "PS256"), True), (("RS256",), False)])
def test_a_ps256_token_from_the_alg_less_rsa_key_verifies_only_when_the_issuer_allows_ps256(
    provider: NodeOidcProvider, algorithms: tuple[str, ...], accepted: bool
) -> None:
    published = _provider_jwks(provider)
    rsa_jwk = next(k for k in published["keys"] if k["kty"] == "RSA")
    assert "alg" not in rsa_jwk  # as the provider publishes it
    issuer = TrustedIssuer(
        issuer=provider.issuer,
        keys=load_remote_jwks(published, algorithms),
        rules=IssuerRules(algorithms=algorithms, audience=AUDIENCE),
    )
    verifier = JwtVerifier(SERVICE_ISSUER, KeySet(generate_signing_key()), [issuer], 30)
    parent = provider.token("gateway", "PS256")
    if accepted:
        assert verifier.verify(parent).client_id == "gateway"
        assert verifier.verify(provider.token("gateway", "RS256")).client_id == "gateway"
    else:
        with pytest.raises(ParentRejected) as refused:
            verifier.verify(parent)
        assert refused.value.detail == "algorithm not allowed"
