"""A token's identity never depends on its signature bytes, and a child always names who delegated (SPEC §5).

ECDSA signatures are malleable: ``(r, s)`` and ``(r, n - s)`` both verify. Were a jti-less upstream
parent identified by a hash over the whole token, its re-encoded twin would be a new, unrevoked chain.
These tests run through a real gRPC channel and a real Redis.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from delegation.v1 import admin_pb2, delegation_pb2
from delegation_service.client import error_details
from delegation_service.domain.encoding import b64url_decode, b64url_encode
from tests.security.forge import DROP
from tests.security.harness import SecureService, start_service

# The order n of P-256 (SEC 2 §2.4.2), written out rather than taken from the code under test.
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def twin(token: str) -> str:
    """The same ES256 token carrying the other signature that verifies, ``(r, n - s)``."""
    signing_input, segment = token.rsplit(".", 1)
    signature = b64url_decode(segment)
    s = int.from_bytes(signature[32:], "big")
    other = signature[:32] + (P256_ORDER - s).to_bytes(32, "big")
    return f"{signing_input}.{b64url_encode(other)}"


@pytest.fixture(scope="module")
def lenient(redis_server: Any) -> Iterator[SecureService]:
    """The service trusting an upstream issuer that does not normalise ECDSA (``allow_high_s``) and
    names its clients in a ``cid`` claim: the twin verifies there, so only identity can stop it."""
    service = start_service(redis_server.url, upstream_rules={"allow_high_s": True, "actor_claim": "cid"})
    yield service
    service.stop()


def _revoke_chain(service: SecureService, chain_id: str) -> None:
    service.admin().RevokeChain(
        admin_pb2.RevokeChainRequest(chain_id=chain_id), metadata=service.operator_metadata(), timeout=5
    )


def _refusal(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    details = error_details(raised.value)
    return details.code, details.reason


def test_a_revoked_jti_less_parent_stays_revoked_as_its_high_s_twin(lenient: SecureService) -> None:
    parent = lenient.upstream(jti=DROP)
    chain_id = lenient.delegate(parent).chain_id
    assert lenient.delegate(twin(parent)).chain_id == chain_id  # one identity for both encodings

    _revoke_chain(lenient, chain_id)

    for presented in (parent, twin(parent)):
        code, reason = _refusal(lambda presented=presented: lenient.delegate(presented))
        assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_PARENT_TOKEN")


def test_a_high_s_twin_is_refused_by_default(secure: SecureService) -> None:
    parent = secure.upstream(jti=DROP)
    assert secure.delegate(parent).access_token
    code, reason = _refusal(lambda: secure.delegate(twin(parent)))
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_PARENT_TOKEN")


def test_a_revoked_child_stays_inactive_as_its_high_s_twin(secure: SecureService) -> None:
    child = secure.delegate(secure.upstream()).access_token
    secure.public().Revoke(delegation_pb2.RevokeRequest(token=child), timeout=5)
    for presented in (child, twin(child)):
        answer = secure.public().Introspect(
            delegation_pb2.IntrospectRequest(token=presented),
            metadata=secure.operator_metadata(),
            timeout=5,
        )
        assert answer.active is False


def test_a_parent_naming_no_client_is_refused_with_a_clear_reason(secure: SecureService) -> None:
    parent = secure.upstream(client_id=DROP)
    code, reason = _refusal(lambda: secure.delegate(parent))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PARENT_WITHOUT_CLIENT")


def test_the_issuers_actor_claim_names_the_delegating_client(lenient: SecureService) -> None:
    child = lenient.delegate(lenient.upstream(client_id=DROP, cid="kiosk")).access_token
    answer = lenient.public().Introspect(
        delegation_pb2.IntrospectRequest(token=child), metadata=lenient.operator_metadata(), timeout=5
    )
    assert answer.active is True
    assert answer.actor_client_id == "kiosk"
