"""The real gRPC service trusting an issuer by its URL (discovery), end to end: tokens signed by a JOSE
library we did not write (joserfc), rotation through the running service, start-up with the provider
down, readiness, metrics and ``config check``.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from joserfc import jwt as jose_jwt
from joserfc.jwk import ECKey, RSAKey

from delegation_service.adapters.keys import generate_signing_key
from delegation_service.app import Application, build, ephemeral_keys, load_catalog
from delegation_service.client import DelegationClient
from delegation_service.config import Config, TrustedIssuer
from delegation_service.dev import demo_catalog_path
from delegation_service.domain.encoding import b64url_decode
from delegation_service.transport.server import RunningServer
from devtools.oidc_provider import JwksMode, OidcProvider

DELEGATION_SCOPE = "directory.delegations.rw"
READY_WAIT_SECONDS = 20.0


@pytest.fixture
def provider() -> Iterator[OidcProvider]:
    running = OidcProvider()
    yield running
    running.stop()


def start(provider: OidcProvider, **issuer: Any) -> tuple[Application, RunningServer]:
    config = Config(
        listen="127.0.0.1:0",
        issuer="https://delegation.test.invalid",
        store="memory",
        access_mode="open",
        trusted_issuers=(TrustedIssuer(issuer=provider.issuer, **issuer),),
    ).validate()
    app = build(config, keys=ephemeral_keys("ES256"), catalog=load_catalog(demo_catalog_path()))
    return app, app.serve()


@pytest.fixture
def service(provider: OidcProvider) -> Iterator[tuple[Application, RunningServer]]:
    app, running = start(provider)
    yield app, running
    running.stop(0)
    app.close()


def joserfc_token(provider: OidcProvider, key: RSAKey | ECKey, alg: str) -> str:
    now = int(time.time())
    claims = {
        "iss": provider.issuer,
        "sub": "alice",
        "client_id": "gateway",
        "scope": f"{DELEGATION_SCOPE} warehouse.items.rw",
        "iat": now,
        "exp": now + 600,
        "jti": secrets.token_urlsafe(12),
    }
    kid = key.as_dict(private=False)["kid"]
    return jose_jwt.encode({"alg": alg, "kid": kid, "typ": "at+jwt"}, claims, key)


P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def is_low_s(token: str) -> bool:
    signature = token.rsplit(".", 1)[1]
    raw = b64url_decode(signature)
    return int.from_bytes(raw[32:], "big") <= P256_ORDER // 2


def delegate(running: RunningServer, parent: str) -> list[str]:
    with DelegationClient(f"127.0.0.1:{running.port}", 10.0) as client:
        return list(client.delegate(parent, "billing", ["warehouse.items.r"]).scopes)


def health(running: RunningServer) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        # types-grpcio-health-checking declares HealthStub without its methods.
        response = stub.Check(health_pb2.HealthCheckRequest(), timeout=5)  # type: ignore[attr-defined]
        return int(response.status)


def test_joserfc_tokens_verify_through_the_grpc_service_across_a_rotation(
    provider: OidcProvider, service: tuple[Application, RunningServer]
) -> None:
    app, running = service
    first = RSAKey.generate_key(2048, parameters={"kid": "rsa-1", "alg": "RS256", "use": "sig"})
    # Published after start-up, without overlap: the unknown kid makes the service refresh at once.
    provider.extra_jwks = [first.as_dict(private=False)]
    assert delegate(running, joserfc_token(provider, first, "RS256")) == ["warehouse.items.r"]
    second = ECKey.generate_key("P-256", parameters={"kid": "ec-2", "alg": "ES256", "use": "sig"})
    provider.extra_jwks = [second.as_dict(private=False)]
    provider.rotate(publish=[], sign_with=provider.signing_key)
    # A second unknown kid within unknown_kid_interval_seconds is rate-limited: this rotation is
    # learned by the scheduled refresh instead (run here at once).
    assert app.key_sources[0].refresh()
    # joserfc does not normalise ECDSA to low-S, which we require (SPEC §5) unless an issuer is allowed
    # high-S: take the first of its (random) signatures that is low-S, as a normalising IdP's would be.
    parent = next(t for t in (joserfc_token(provider, second, "ES256") for _ in range(64)) if is_low_s(t))
    assert delegate(running, parent) == ["warehouse.items.r"]


def test_a_key_removed_from_the_jwks_stops_verifying_after_the_refresh(
    provider: OidcProvider, service: tuple[Application, RunningServer]
) -> None:
    app, running = service
    parent = provider.mint(scopes=(DELEGATION_SCOPE, "warehouse.items.rw"))
    assert delegate(running, parent) == ["warehouse.items.r"]  # verified, and now in the verified cache
    replacement = generate_signing_key("ES256")
    provider.rotate(publish=[replacement], sign_with=replacement)
    assert app.key_sources[0].refresh()
    with pytest.raises(grpc.RpcError) as caught:
        delegate(running, parent)
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert delegate(running, provider.mint(scopes=(DELEGATION_SCOPE, "warehouse.items.rw"))) == [
        "warehouse.items.r"
    ]
    exposition = app.metrics.registry
    assert exposition.get_sample_value("delegation_jwks_keys", {"issuer": provider.issuer}) == 1
    # Start-up, the refresh above, and the one the removed (now unknown) kid triggered.
    assert exposition.get_sample_value("delegation_jwks_fetches_total", {"issuer": provider.issuer}) == 3
    age = exposition.get_sample_value("delegation_jwks_age_seconds", {"issuer": provider.issuer})
    assert age is not None and age >= 0


def test_start_up_with_the_provider_down_serves_not_ready_then_recovers(provider: OidcProvider) -> None:
    provider.mode = JwksMode.DOWN
    app, running = start(provider, refresh_min_seconds=1.0)
    try:
        assert health(running) == health_pb2.HealthCheckResponse.NOT_SERVING
        reasons = app.not_ready_reasons()
        assert len(reasons) == 1 and provider.issuer in reasons[0] and "http_status" in reasons[0]
        failures = app.metrics.registry.get_sample_value(
            "delegation_jwks_fetch_failures_total", {"issuer": provider.issuer, "reason": "http_status"}
        )
        assert failures is not None and failures >= 1
        provider.mode = JwksMode.OK
        # The background retry (1 s, then at most refresh_min_seconds apart) picks the provider up.
        deadline = time.monotonic() + READY_WAIT_SECONDS
        while health(running) != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline, "never became ready after the provider came back"
            time.sleep(0.2)
        assert delegate(running, provider.mint(scopes=(DELEGATION_SCOPE, "warehouse.items.rw")))
    finally:
        running.stop(0)
        app.close()


def write_config(tmp_path: Path, provider: OidcProvider) -> Path:
    catalog = demo_catalog_path()
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[issuer]
name = "https://delegation.test.invalid"

[catalog]
file = "{catalog}"

[[trusted_issuers]]
issuer = "{provider.issuer}"
fetch_timeout_seconds = 2
""",
        encoding="utf-8",
    )
    return path


def config_check(path: Path) -> tuple[int, dict[str, Any]]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "delegation_service.cli",
            "config",
            "check",
            "--config",
            str(path),
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.returncode, json.loads(result.stdout)


def test_config_check_reports_each_issuer_state(tmp_path: Path, provider: OidcProvider) -> None:
    path = write_config(tmp_path, provider)
    code, report = config_check(path)
    assert code == 0
    assert report["trusted_issuers"] == [
        {
            "issuer": provider.issuer,
            "source": provider.issuer + "/.well-known/openid-configuration",
            "state": "ready",
            "keys": 1,
            "error": None,
        }
    ]
    provider.metadata_issuer = "https://someone-else.example"
    code, report = config_check(path)
    assert code == 1
    [entry] = report["trusted_issuers"]
    assert entry["state"] == "no_keys" and entry["error"].startswith("issuer_mismatch")
