"""A store outage is never reported as bad credentials (SPEC §5): a caller whose JWT credential needs the
store to be checked is told ``UNAVAILABLE`` (retry), not ``UNAUTHENTICATED`` (log in again)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from delegation.v1 import admin_pb2, delegation_pb2
from delegation_service.client import error_details
from tests.redis_processes import PrivateRedis
from tests.security.harness import INTROSPECTION_SCOPE, OPERATOR_SCOPE, SecureService, bearer, start_service

pytestmark = pytest.mark.redis


@pytest.fixture
def outage(tmp_path: Path) -> Iterator[tuple[SecureService, PrivateRedis]]:
    """The service over a private Redis that the test kills."""
    redis = PrivateRedis(tmp_path / "redis", {"appendonly": "no"}).start()
    service = start_service(redis.url)
    yield service, redis
    service.stop()
    redis.stop()


def _failure(
    call: grpc.UnaryUnaryMultiCallable[Any, Any], request: object, token: str
) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call(request, timeout=5, metadata=bearer(token))
    details = error_details(raised.value)
    return details.code, details.reason


def test_a_caller_jwt_checked_while_redis_is_down_gets_unavailable(
    outage: tuple[SecureService, PrivateRedis],
) -> None:
    service, redis = outage
    child = service.delegate(service.upstream()).access_token
    introspector = service.upstream(scope=INTROSPECTION_SCOPE)
    operator = service.upstream(scope=OPERATOR_SCOPE)
    redis.kill()

    unavailable = (grpc.StatusCode.UNAVAILABLE, "STORE_UNAVAILABLE")
    introspect = service.public().Introspect
    assert _failure(introspect, delegation_pb2.IntrospectRequest(token=child), introspector) == unavailable
    revoke_subject = service.admin().RevokeSubject
    assert _failure(revoke_subject, admin_pb2.RevokeSubjectRequest(subject="alice"), operator) == unavailable
