"""The edge verifier through Envoy's ext_authz API, as Envoy calls it: a CheckRequest over real gRPC to a
real edge, which follows a real service over Redis. No Envoy binary installs here, so the test sends the
request Envoy sends."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc
from google.rpc import code_pb2

from delegation_service.client import DelegationClient
from delegation_service.edge.server import RunningEdge
from delegation_service.edge.verifier import RouteRule, StalenessMode
from tests.edge.conftest import EdgeFactory, wait_until
from tests.integration.harness import Harness

pytestmark = pytest.mark.redis

CHILD_SCOPE = "warehouse.items.r"


class Envoy:
    """What Envoy's ext_authz filter sends: one CheckRequest per HTTP request."""

    def __init__(self, edge: RunningEdge) -> None:
        self._channel = grpc.insecure_channel(f"127.0.0.1:{edge.ext_authz_port}")
        self._stub = external_auth_pb2_grpc.AuthorizationStub(self._channel)

    def check(self, token: str | None, path: str = "/items/42") -> external_auth_pb2.CheckResponse:
        headers = {":method": "GET", ":path": path, "host": "api.test.invalid"}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        http = attribute_context_pb2.AttributeContext.HttpRequest(
            method="GET", path=path, host="api.test.invalid", headers=headers, protocol="HTTP/1.1"
        )
        request = external_auth_pb2.CheckRequest(
            attributes=attribute_context_pb2.AttributeContext(
                request=attribute_context_pb2.AttributeContext.Request(http=http)
            )
        )
        response: external_auth_pb2.CheckResponse = self._stub.Check(request, timeout=5.0)
        return response

    def code(self, token: str | None, path: str = "/items/42") -> int:
        return int(self.check(token, path).status.code)

    def close(self) -> None:
        self._channel.close()


@pytest.fixture
def client(service: Harness) -> Iterator[DelegationClient]:
    with service.client() as client:
        yield client


def envoy_for(edge: RunningEdge) -> Envoy:
    return Envoy(edge)


def test_an_active_child_is_allowed_with_identity_headers(
    service: Harness, client: DelegationClient, start_edge_for: EdgeFactory
) -> None:
    envoy = envoy_for(start_edge_for(routes=(RouteRule("/items", CHILD_SCOPE),)))
    child = client.delegate(service.parent(), "billing", [CHILD_SCOPE])
    response = envoy.check(child.access_token)
    assert response.status.code == code_pb2.OK
    headers = {h.header.key: h.header.value for h in response.ok_response.headers}
    assert headers["x-delegation-subject"] == "alice"
    assert headers["x-delegation-client-id"] == "billing"
    assert headers["x-delegation-scopes"] == CHILD_SCOPE
    assert headers["x-delegation-chain-id"] == child.chain_id
    envoy.close()


def test_refusals_carry_rfc6750_challenges(
    service: Harness, client: DelegationClient, start_edge_for: EdgeFactory
) -> None:
    envoy = envoy_for(start_edge_for(routes=(RouteRule("/admin", "warehouse.items.rw"),)))
    child = client.delegate(service.parent(), "billing", [CHILD_SCOPE])
    missing = envoy.check(None, "/admin")
    assert missing.denied_response.status.code == 401
    assert missing.denied_response.headers[0].header.value == 'Bearer realm="delegation-service"'
    forged = envoy.check(child.access_token[:-4] + "AAAA", "/admin")
    assert forged.status.code == code_pb2.UNAUTHENTICATED
    assert 'error="invalid_token"' in forged.denied_response.headers[0].header.value
    narrow = envoy.check(child.access_token, "/admin")
    assert narrow.status.code == code_pb2.PERMISSION_DENIED
    assert narrow.denied_response.status.code == 403
    assert 'scope="warehouse.items.rw"' in narrow.denied_response.headers[0].header.value
    # With rules, a path none covers is refused rather than left open.
    assert envoy.code(child.access_token, "/elsewhere") == code_pb2.PERMISSION_DENIED
    # A parent (upstream) token is no child: the edge only accepts this service's children.
    assert envoy.code(service.parent(), "/admin") == code_pb2.UNAUTHENTICATED
    envoy.close()


@pytest.mark.parametrize("what", ["token", "chain", "subject", "client", "actor"])
def test_a_revoked_child_is_refused_at_the_edge(
    what: str, service: Harness, client: DelegationClient, start_edge_for: EdgeFactory
) -> None:
    envoy = envoy_for(start_edge_for())
    parent = service.parent(subject=f"sub-{what}", client_id=f"gw-{what}")
    child = client.delegate(parent, "billing", [CHILD_SCOPE])
    bystander = client.delegate(
        service.parent(subject="bob", client_id="bystander-gw"), "search", [CHILD_SCOPE]
    )
    assert envoy.code(child.access_token) == code_pb2.OK
    if what == "token":
        client.revoke(child.access_token)
    elif what == "chain":
        client.revoke_chain(child.chain_id)
    elif what == "subject":
        client.revoke_subject(f"sub-{what}")
    elif what == "client":
        client.revoke_client("billing")
    else:
        client.revoke_client(f"gw-{what}")  # the client that delegated (act.sub)
    wait_until(
        lambda: envoy.code(child.access_token) == code_pb2.UNAUTHENTICATED, "the revoked child refused"
    )
    if what != "client":
        assert envoy.code(bystander.access_token) == code_pb2.OK
    envoy.close()


def test_a_cold_edge_starts_from_the_revocations_in_force(
    service: Harness, client: DelegationClient, start_edge_for: EdgeFactory
) -> None:
    child = client.delegate(service.parent(), "billing", [CHILD_SCOPE])
    client.revoke_chain(child.chain_id)
    envoy = envoy_for(start_edge_for())  # started after the revocation: the snapshot brings it
    assert envoy.code(child.access_token) == code_pb2.UNAUTHENTICATED
    envoy.close()


def test_a_dropped_stream_resumes_from_its_cursor(
    service: Harness, client: DelegationClient, start_edge_for: EdgeFactory
) -> None:
    """A feed server that goes away mid-stream; the edge resumes on a second one, missing nothing."""
    first = service.app.serve("127.0.0.1:0")
    edge = start_edge_for(feed_upstream=f"127.0.0.1:{first.port}")
    envoy = envoy_for(edge)
    early = client.delegate(service.parent(), "billing", [CHILD_SCOPE])
    client.revoke_chain(early.chain_id)
    wait_until(lambda: envoy.code(early.access_token) == code_pb2.UNAUTHENTICATED, "first revocation seen")
    cursor = edge.verifier.feed.cursor
    assert cursor
    reconnects = edge.verifier.feed.reconnects
    first.stop(0)
    wait_until(lambda: edge.verifier.feed.reconnects > reconnects, "the stream ended and the feed retried")
    late = client.delegate(service.parent(), "billing", [CHILD_SCOPE])
    client.revoke_chain(late.chain_id)
    # Same port, new server: a service restarted behind the same address.
    second = service.app.serve(f"127.0.0.1:{first.port}")
    try:
        wait_until(lambda: envoy.code(late.access_token) == code_pb2.UNAUTHENTICATED, "resumed and caught up")
        assert edge.verifier.feed.resyncs == 0  # resumed from the cursor, no snapshot needed
    finally:
        second.stop(0)
        envoy.close()


@pytest.mark.parametrize("mode", [StalenessMode.STRICT, StalenessMode.BEST_EFFORT])
def test_a_stream_cut_longer_than_the_bound(
    mode: StalenessMode, service: Harness, client: DelegationClient, start_edge_for: EdgeFactory
) -> None:
    """strict fails closed; best_effort asks Introspect, which knows the revocation the mirror missed."""
    feed = service.app.serve("127.0.0.1:0")
    edge = start_edge_for(feed_upstream=f"127.0.0.1:{feed.port}", mode=mode, max_staleness_seconds=2.0)
    envoy = envoy_for(edge)
    active = client.delegate(service.parent(), "billing", [CHILD_SCOPE])
    revoked = client.delegate(service.parent(), "billing", [CHILD_SCOPE])
    feed.stop(0)  # the stream is cut, and stays cut: Introspect (the main server) still answers
    wait_until(lambda: edge.verifier.staleness() > 2.0, "the mirror went stale")
    client.revoke_chain(revoked.chain_id)  # the mirror cannot learn this one
    if mode is StalenessMode.STRICT:
        for token in (active.access_token, revoked.access_token):
            response = envoy.check(token)
            assert response.status.code == code_pb2.UNAVAILABLE
            assert response.denied_response.status.code == 503
    else:
        assert envoy.code(active.access_token) == code_pb2.OK
        assert envoy.code(revoked.access_token) == code_pb2.UNAUTHENTICATED
        exposition = edge.verifier.metrics.exposition().decode()
        assert 'delegation_edge_introspect_fallbacks_total{result="active"} 1.0' in exposition
        assert 'delegation_edge_introspect_fallbacks_total{result="inactive"} 1.0' in exposition
    envoy.close()
