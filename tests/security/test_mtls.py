"""TLS and mutual TLS on the gRPC port, with certificates generated at test time.

Refusals at the handshake (no client certificate, another CA's certificate, plaintext) never reach
the service; an operator certificate on the allow-list may revoke, a subsystem certificate may not.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from delegation.v1 import admin_pb2, delegation_pb2
from delegation_service.client import error_details
from tests.security.harness import SecureService, start_service
from tests.security.pki import GATEWAY_URI, OPERATOR_NAME, SUBSYSTEM_NAME, Issued, Pki

HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HANDSHAKE_SECONDS = 1.0


@pytest.fixture(scope="module")
def mtls(redis_server: Any, pki: Pki) -> Iterator[SecureService]:
    service = start_service(
        redis_server.url,
        tls_cert_file=pki.server.cert_file,
        tls_key_file=pki.server.key_file,
        tls_client_ca_file=pki.ca_file,
        operator_identities=(OPERATOR_NAME,),
        introspection_identities=(SUBSYSTEM_NAME, GATEWAY_URI),
        handshake_timeout_seconds=HANDSHAKE_SECONDS,
    )
    yield service
    service.stop()


def credentials(pki: Pki, client: Issued | None, root: bytes | None = None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=root or pki.ca_pem,
        private_key=client.key_pem if client else None,
        certificate_chain=client.cert_pem if client else None,
    )


def refused_at_handshake(service: SecureService, channel: grpc.Channel) -> None:
    """A call on ``channel`` fails UNAVAILABLE: the connection never carried an RPC."""
    with pytest.raises(grpc.RpcError) as raised:
        service.public(channel).GetJwks(delegation_pb2.GetJwksRequest(), timeout=3)
    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE


def tls_client_context(pki: Pki, client: Issued | None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=pki.ca_pem.decode())
    context.set_alpn_protocols(["h2"])
    if client is not None:
        context.load_cert_chain(client.cert_file, client.key_file)
    return context


def server_rejects_tls_session(service: SecureService, context: ssl.SSLContext) -> None:
    """Complete (or fail) the TLS handshake, then show that the server closes without HTTP/2."""
    host, port = service.address.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                # TLS 1.3: the client finishes first; the server's verdict on our certificate comes next.
                tls.sendall(HTTP2_PREFACE)
                assert tls.recv(1024) == b""
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            pass  # the server sent an alert: refused at the handshake


def test_an_allowed_operator_certificate_can_revoke_a_chain(mtls: SecureService, pki: Pki) -> None:
    channel = mtls.channel(credentials(pki, pki.operator))
    parent = mtls.upstream()
    chain = mtls.delegate(parent, channel=channel).chain_id

    response = mtls.admin(channel).RevokeChain(admin_pb2.RevokeChainRequest(chain_id=chain), timeout=5)

    assert response.revoked_token_count == 2
    with pytest.raises(grpc.RpcError) as raised:
        mtls.delegate(parent, channel=channel)
    assert error_details(raised.value).reason == "INVALID_PARENT_TOKEN"


def test_a_subsystem_certificate_cannot_revoke(mtls: SecureService, pki: Pki) -> None:
    channel = mtls.channel(credentials(pki, pki.subsystem))
    chain = mtls.delegate(mtls.upstream(), channel=channel).chain_id

    with pytest.raises(grpc.RpcError) as raised:
        mtls.admin(channel).RevokeChain(admin_pb2.RevokeChainRequest(chain_id=chain), timeout=5)

    details = error_details(raised.value)
    assert (details.code, details.reason) == (grpc.StatusCode.PERMISSION_DENIED, "OPERATOR_ROLE_REQUIRED")


@pytest.mark.parametrize("who", ["subsystem", "gateway"])
def test_certificates_on_the_introspection_list_may_introspect(
    mtls: SecureService, pki: Pki, who: str
) -> None:
    """Matched on the subject CN (subsystem) or on a URI SAN (gateway, a SPIFFE id)."""
    channel = mtls.channel(credentials(pki, getattr(pki, who)))
    child = mtls.delegate(mtls.upstream(), channel=channel).access_token

    response = mtls.public(channel).Introspect(delegation_pb2.IntrospectRequest(token=child), timeout=5)

    assert response.active


def test_a_certificate_on_no_list_is_authenticated_but_may_not_introspect(
    mtls: SecureService, pki: Pki
) -> None:
    channel = mtls.channel(credentials(pki, pki.nobody))
    child = mtls.delegate(mtls.upstream(), channel=channel).access_token  # public calls work

    with pytest.raises(grpc.RpcError) as raised:
        mtls.public(channel).Introspect(delegation_pb2.IntrospectRequest(token=child), timeout=5)

    details = error_details(raised.value)
    assert (details.code, details.reason) == (grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_AUTHORIZED")


def test_the_operator_certificate_also_may_introspect(mtls: SecureService, pki: Pki) -> None:
    channel = mtls.channel(credentials(pki, pki.operator))
    response = mtls.public(channel).Introspect(
        delegation_pb2.IntrospectRequest(token=mtls.upstream()), timeout=5
    )
    assert response.active


def test_no_client_certificate_is_refused_at_the_handshake(mtls: SecureService, pki: Pki) -> None:
    refused_at_handshake(mtls, mtls.channel(credentials(pki, None)))
    server_rejects_tls_session(mtls, tls_client_context(pki, None))


def test_a_certificate_from_another_ca_is_refused_at_the_handshake(mtls: SecureService, pki: Pki) -> None:
    """The stranger's certificate even carries the operator's name: the CA is what counts."""
    refused_at_handshake(mtls, mtls.channel(credentials(pki, pki.stranger_operator)))
    server_rejects_tls_session(mtls, tls_client_context(pki, pki.stranger_operator))


def test_plaintext_to_the_tls_port_is_refused(mtls: SecureService) -> None:
    refused_at_handshake(mtls, mtls.channel())
    host, port = mtls.address.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall(HTTP2_PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        answer = raw.recv(1024)
    assert not answer.startswith(b"\x00\x00"), "the TLS port answered plaintext HTTP/2"


def test_clients_verify_the_server_certificate(mtls: SecureService, pki: Pki) -> None:
    """A client trusting only another CA does not talk to our server (no TLS downgrade by trust)."""
    refused_at_handshake(mtls, mtls.channel(credentials(pki, pki.operator, root=pki.stranger_ca_pem)))


def test_a_silent_client_is_dropped_within_the_handshake_timeout(mtls: SecureService) -> None:
    host, port = mtls.address.split(":")
    started = time.monotonic()
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        contextlib.suppress(ConnectionResetError),
    ):
        assert raw.recv(1024) == b""
    # Dropped by the handshake timeout: not at once, and long before gRPC's default of 120 s.
    assert HANDSHAKE_SECONDS * 0.5 <= time.monotonic() - started < HANDSHAKE_SECONDS + 3
