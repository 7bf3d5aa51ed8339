"""Key rotation with overlap, as three successive deployments over one Redis.

1. ``k1`` signs, ``k2`` is published as *next*: the JWKS holds both, tokens carry ``k1``.
2. ``k2`` signs, ``k1`` stays as *previous*: tokens signed by ``k1`` still verify until they expire,
   and servers still on step 1 verify tokens signed by ``k2`` (they published it ahead of use).
3. ``k1`` is dropped (after the longest child lifetime): its tokens no longer verify.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from delegation.v1 import delegation_pb2
from delegation_service.adapters.keys import PRIVATE_JWK_MEMBERS, KeySet, SigningKey, generate_signing_key
from tests.security.harness import SecureService, start_service


@pytest.fixture(scope="module")
def k1() -> SigningKey:
    return generate_signing_key("ES256")


@pytest.fixture(scope="module")
def k2() -> SigningKey:
    return generate_signing_key("ES256")


@pytest.fixture(scope="module")
def steps(redis_server: Any, k1: SigningKey, k2: SigningKey) -> Iterator[dict[str, SecureService]]:
    prefix = "rotation"
    running = {
        "before": start_service(redis_server.url, keys=KeySet(k1, next_keys=[k2]), redis_key_prefix=prefix),
        "after": start_service(redis_server.url, keys=KeySet(k2, previous=[k1]), redis_key_prefix=prefix),
        "dropped": start_service(redis_server.url, keys=KeySet(k2), redis_key_prefix=prefix),
    }
    yield running
    for service in running.values():
        service.stop()


def jwks(service: SecureService) -> list[dict[str, str]]:
    keys: list[dict[str, str]] = json.loads(
        service.public().GetJwks(delegation_pb2.GetJwksRequest(), timeout=5).jwks_json
    )["keys"]
    return keys


def kids(service: SecureService) -> list[str]:
    return [key["kid"] for key in jwks(service)]


def active(service: SecureService, token: str) -> bool:
    response = service.public().Introspect(
        delegation_pb2.IntrospectRequest(token=token), timeout=5, metadata=list(service.operator_metadata())
    )
    return bool(response.active)


def mint(service: SecureService, lifetime: int | None = None) -> str:
    return str(
        service.delegate(service.upstream(), lifetime=(lifetime, 0) if lifetime else None).access_token
    )


def test_the_next_key_is_published_before_it_signs(
    steps: dict[str, SecureService], k1: SigningKey, k2: SigningKey
) -> None:
    before = steps["before"]
    assert kids(before) == [k1.kid, k2.kid]
    assert jwt.get_unverified_header(mint(before))["kid"] == k1.kid


def test_after_rotation_the_new_key_signs_and_the_jwks_holds_both(
    steps: dict[str, SecureService], k1: SigningKey, k2: SigningKey
) -> None:
    after = steps["after"]
    assert kids(after) == [k2.kid, k1.kid]
    assert jwt.get_unverified_header(mint(after))["kid"] == k2.kid


def test_tokens_of_the_previous_key_verify_until_they_expire(steps: dict[str, SecureService]) -> None:
    old_token = mint(steps["before"], lifetime=2)
    assert active(steps["after"], old_token)
    time.sleep(3.1)  # the child's own expiry, not the key, ends it
    assert not active(steps["after"], old_token)


def test_servers_not_yet_rotated_verify_tokens_of_the_next_key(steps: dict[str, SecureService]) -> None:
    """A rolling deploy: an old instance must accept what a new one minted a moment ago."""
    assert active(steps["before"], mint(steps["after"]))


def test_a_dropped_key_no_longer_verifies(steps: dict[str, SecureService], k1: SigningKey) -> None:
    old_token = mint(steps["before"])
    assert active(steps["after"], old_token)
    assert kids(steps["dropped"]) == [steps["dropped"].keys.active.kid]
    assert not active(steps["dropped"], old_token)


def test_the_jwks_never_holds_a_private_member(steps: dict[str, SecureService]) -> None:
    for service in steps.values():
        for key in jwks(service):
            assert not PRIVATE_JWK_MEMBERS & key.keys()
            assert key["use"] == "sig" and key["alg"] == "ES256"
