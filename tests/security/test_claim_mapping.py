"""A trusted issuer's claim mapping through the real gRPC service and Redis (issue 18.1).

A ``client_credentials`` token carries no bearer, names its client in ``cid`` and its scopes in an
``scp`` list. Read with the default mapping it is a *person* named after its subject, so organisation
scopes are refused; with a mapping that says "this client acts for organisation acme", it delegates them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from delegation.v1 import delegation_pb2
from delegation_service.adapters.upstream_claims import ClaimMapping, ScopeFormat
from delegation_service.client import error_details
from delegation_service.domain.scopes import Bearer, BearerType
from tests.security.forge import DROP
from tests.security.harness import SecureService, start_service

MAPPING = ClaimMapping(
    scopes_claims=("scp",),
    scopes_format=ScopeFormat.LIST,
    client_claims=("cid",),
    client_bearers={"gateway": Bearer(BearerType.ORGANIZATION, "acme")},
)


@pytest.fixture(scope="module")
def mapped(redis_server: Any) -> Iterator[SecureService]:
    service = start_service(redis_server.url, upstream_rules={"claims": MAPPING})
    yield service
    service.stop()


@pytest.fixture(scope="module")
def unmapped(redis_server: Any) -> Iterator[SecureService]:
    service = start_service(redis_server.url)
    yield service
    service.stop()


def _machine_token(service: SecureService) -> str:
    """What a provider issues for client_credentials: no bearer, no client_id; cid and an scp list."""
    return service.upstream(
        sub="gateway",
        client_id=DROP,
        bearer=DROP,
        scope=DROP,
        cid="gateway",
        scp=["directory.delegations.rw", "warehouse.items.rw"],
    )


def test_a_client_mapped_to_an_organisation_delegates_organisation_scopes(mapped: SecureService) -> None:
    parent = _machine_token(mapped)
    child = mapped.delegate(parent, "billing", ["Org/acme.warehouse.items.r"])
    assert list(child.scopes) == ["warehouse.items.r"]
    assert child.bearer == delegation_pb2.Bearer(type=delegation_pb2.BEARER_TYPE_ORGANIZATION, id="acme")
    introspected = mapped.public().Introspect(
        delegation_pb2.IntrospectRequest(token=child.access_token),
        metadata=mapped.operator_metadata(),
        timeout=5,
    )
    assert introspected.active
    assert introspected.client_id == "billing"
    assert introspected.bearer.id == "acme"
    # Every scope the client may hold, when none is named: the bearer is still the organisation.
    everything = mapped.delegate(parent, "billing", [])
    assert everything.bearer.id == "acme"


def test_without_the_mapping_the_same_kind_of_token_is_a_person_and_cannot(unmapped: SecureService) -> None:
    # Readable by the default mapping (client_id, and scp since scope is absent) but with no bearer:
    # a person named after its subject, so an organisation scope names another bearer.
    parent = unmapped.upstream(
        sub="gateway", bearer=DROP, scope=DROP, scp=["directory.delegations.rw", "warehouse.items.rw"]
    )
    assert unmapped.delegate(parent, "billing", ["warehouse.items.r"]).bearer.id == "gateway"
    with pytest.raises(grpc.RpcError) as raised:
        unmapped.delegate(parent, "billing", ["Org/acme.warehouse.items.r"])
    details = error_details(raised.value)
    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "DIFFERENT_BEARER_TYPES")
