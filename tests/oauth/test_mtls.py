"""Certificate-bound children (RFC 8705) on the OAuth port over mutual TLS: a parent bound to a client
certificate (``cnf.x5t#S256``) is exchanged only over a connection presenting that certificate, and the
child keeps the binding; a certificate on the introspection list introspects without a bearer."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from delegation_service.app import RunningApplication
from devtools.redis_server import RedisServer
from tests.integration.harness import build_test_app
from tests.oauth.conftest import OAuthService
from tests.security.pki import GATEWAY_URI, Issued, Pki, make_pki


def x5t(issued: Issued) -> str:
    der = x509.load_pem_x509_certificate(issued.cert_pem).public_bytes(serialization.Encoding.DER)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(Path(tmp_path_factory.mktemp("oauth-pki")))


@pytest.fixture(scope="module")
def mtls_service(redis_server: RedisServer, pki: Pki) -> Iterator[OAuthService]:
    app, upstream, secret = build_test_app(
        store="redis",
        redis_url=redis_server.url,
        redis_key_prefix="oauth-mtls",
        redis_allow_unsafe_persistence=True,
        oauth_listen="127.0.0.1:0",
        admin_listen="",
        tls_cert_file=pki.server.cert_file,
        tls_key_file=pki.server.key_file,
        tls_client_ca_file=pki.ca_file,
        introspection_identities=(GATEWAY_URI,),
    )
    running = app.serve(admin=True)
    assert isinstance(running, RunningApplication)
    yield OAuthService(running, upstream, secret)
    running.stop(0)


def test_the_port_serves_https_and_says_it_binds_certificates(mtls_service: OAuthService, pki: Pki) -> None:
    assert mtls_service.base_url.startswith("https://")
    url = mtls_service.base_url + "/.well-known/oauth-authorization-server"
    metadata = requests.get(url, verify=str(pki.ca_file), timeout=5).json()
    assert metadata["tls_client_certificate_bound_access_tokens"] is True


def test_a_certificate_bound_parent_needs_its_certificate(mtls_service: OAuthService, pki: Pki) -> None:
    parent = mtls_service.parent(cnf={"x5t#S256": x5t(pki.subsystem)})
    form = mtls_service.exchange_form(parent, scope="warehouse.items.r")

    def exchange(issued: Issued | None) -> requests.Response:
        cert = (str(issued.cert_file), str(issued.key_file)) if issued is not None else None
        return requests.post(mtls_service.token_url, data=form, verify=str(pki.ca_file), cert=cert, timeout=5)

    assert exchange(None).json()["reason"] == "PROOF_OF_POSSESSION_REQUIRED"
    assert exchange(pki.nobody).json()["reason"] == "PROOF_OF_POSSESSION_REQUIRED"
    answer = exchange(pki.subsystem)
    assert answer.status_code == 200, answer.json()
    assert answer.json()["token_type"] == "Bearer"  # RFC 8705: a certificate-bound token is a Bearer one
    introspected = requests.post(
        mtls_service.base_url + "/oauth2/introspect",
        data={"token": answer.json()["access_token"]},
        verify=str(pki.ca_file),
        cert=(str(pki.gateway.cert_file), str(pki.gateway.key_file)),
        timeout=5,
    ).json()
    assert introspected["active"] is True
    assert introspected["cnf"] == {"x5t#S256": x5t(pki.subsystem)}


def test_a_certificate_on_no_list_cannot_introspect(mtls_service: OAuthService, pki: Pki) -> None:
    answer = requests.post(
        mtls_service.base_url + "/oauth2/introspect",
        data={"token": mtls_service.parent()},
        verify=str(pki.ca_file),
        cert=(str(pki.nobody.cert_file), str(pki.nobody.key_file)),
        timeout=5,
    )
    assert answer.status_code == 403
    assert answer.json()["error"] == "unauthorized_client"
