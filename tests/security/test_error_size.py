"""Errors stay small and never echo secrets (SPEC §6), whatever the request holds.

The whole status travels in trailers; past a client's metadata limit (8 KiB by default in gRPC C-core,
16 KiB at most here) the client would see RESOURCE_EXHAUSTED instead of the real error. Requests here sit
at the service's limits: the most scopes it accepts, each as long as a message allows.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from delegation.v1 import delegation_pb2
from delegation_service.client import error_details
from delegation_service.transport.errors import MAX_ECHO_CHARS, MAX_VIOLATIONS
from tests.security.harness import SecureService, start_service

STATUS_LIMIT_BYTES = 4096
MAX_SCOPES = 1000  # config.MAX_SCOPES_LIMIT: the most a deployment may allow
DEFAULT_CLIENT_METADATA_LIMIT = 8192


@pytest.fixture(scope="module")
def roomy(redis_server: Any) -> Iterator[SecureService]:
    """A service that accepts as many scopes per request as any deployment may."""
    service = start_service(redis_server.url, max_scopes=MAX_SCOPES)
    yield service
    service.stop()


def _refused(service: SecureService, scopes: list[str]) -> grpc.RpcError:
    # The client keeps gRPC's default metadata limit, as a user's stub would.
    channel = service.channel(options=[("grpc.max_metadata_size", DEFAULT_CLIENT_METADATA_LIMIT)])
    with pytest.raises(grpc.RpcError) as raised:
        service.public(channel).Delegate(
            delegation_pb2.DelegateRequest(
                parent_token=service.upstream(), client_id="billing", scopes=scopes
            ),
            timeout=10,
        )
    return raised.value


def _status_bytes(error: grpc.RpcError) -> int:
    assert isinstance(error, grpc.Call)
    trailers = sum(len(key) + len(value) for key, value in error.trailing_metadata() or ())
    return trailers + len(error.details() or "")


@pytest.mark.parametrize(
    ("count", "length"),
    [(MAX_SCOPES, 50), (40, 1500), (MAX_SCOPES, 60)],
    ids=["most-scopes", "longest-scopes", "most-scopes-longer"],
)
def test_a_request_at_the_limits_gets_its_real_error_in_under_4_kib(
    roomy: SecureService, count: int, length: int
) -> None:
    scopes = [f"nowhere{i:05d}." + "x" * (length - 16) + ".r" for i in range(count)]
    error = _refused(roomy, scopes)
    details = error_details(error)

    assert details.code is grpc.StatusCode.INVALID_ARGUMENT
    assert details.reason in ("INVALID_AUDIENCE", "INVALID_SCOPE_STRUCTURE")  # long names fail the grammar
    assert _status_bytes(error) < STATUS_LIMIT_BYTES
    assert 0 < len(details.violations) <= MAX_VIOLATIONS
    assert int(details.metadata["omitted_violations"]) == count - len(details.violations)
    assert all(len(v) <= MAX_ECHO_CHARS for v in details.metadata["scopes"].split(" "))


def test_a_token_pasted_into_a_scope_field_is_never_echoed(roomy: SecureService) -> None:
    pasted = roomy.upstream()
    secret = roomy.operator_secret
    # A tab does not split, so the last entry is one (invalid) scope carrying the token.
    error = _refused(roomy, ["warehouse.items.r", pasted, secret, f"Bearer\t{pasted}"])
    details = error_details(error)
    assert isinstance(error, grpc.Call)

    assert details.code is grpc.StatusCode.INVALID_ARGUMENT
    everything = repr((error.details(), error.trailing_metadata(), details))
    for value in (pasted, secret, pasted.split(".")[1], pasted.split(".")[2]):
        assert value not in everything
    assert [field for field, _, _ in details.violations] == ["scopes[1]", "scopes[2]", "scopes[3]"]
    assert all("redacted" in description for _, _, description in details.violations)


def test_one_scope_as_long_as_a_message_allows_gets_its_error_at_once(roomy: SecureService) -> None:
    # 60 KB in one entry, with no dot: a backtracking redaction pattern spent seconds on it, past this
    # call's 10 s deadline on a loaded host. The scan is linear now.
    for value in ("x" * 60_000, "eyJ" * 20_000):
        error = _refused(roomy, [value])
        details = error_details(error)
        assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_SCOPE_STRUCTURE")
        assert _status_bytes(error) < STATUS_LIMIT_BYTES
