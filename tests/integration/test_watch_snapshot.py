"""WatchRevocations for a gateway that starts cold: the revocations still in force, then the new ones.

Each test runs its own service with a fresh key prefix, so the revocation stream holds only its own
events; on the single node and on the 3-master cluster.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator

import pytest

from delegation.v1 import delegation_pb2
from delegation_service.client import DelegationClient
from tests.integration.harness import Harness, start_harness

pytestmark = pytest.mark.redis

STREAM_SECONDS = 10.0
EXPIRY_WAIT_SECONDS = 5.0


@pytest.fixture(params=["standalone", "cluster"])
def private_stream(request: pytest.FixtureRequest) -> Iterator[Harness]:
    redis = request.getfixturevalue("redis_cluster" if request.param == "cluster" else "redis_server")
    harness = start_harness(redis.url, redis_mode=request.param, redis_key_prefix=f"ws{secrets.token_hex(4)}")
    yield harness
    harness.server.stop(0)


def follow(
    client: DelegationClient, request: delegation_pb2.WatchRevocationsRequest, count: int
) -> list[delegation_pb2.WatchRevocationsResponse]:
    """The first ``count`` messages of a stream (bounded in time)."""
    received: list[delegation_pb2.WatchRevocationsResponse] = []
    stream = client.public.WatchRevocations(request, timeout=STREAM_SECONDS)
    try:
        for message in stream:
            received.append(message)
            if len(received) == count:
                break
    finally:
        stream.cancel()
    return received


def test_a_cold_gateway_gets_the_revocations_in_force_then_follows(private_stream: Harness) -> None:
    harness = private_stream
    with harness.client() as client:
        # Two revocations that stop mattering within seconds: their tokens expire.
        brief_parent = harness.parent(lifetime_seconds=2)
        brief_child = client.delegate(brief_parent, "billing", ["warehouse.items.r"], lifetime_seconds=1)
        client.revoke(brief_child.access_token)
        client.revoke(brief_parent)
        # Three that stay in force: a chain, a subject horizon and a client horizon.
        lasting = harness.parent()
        lasting_chain = client.delegate(lasting, "billing", ["warehouse.items.r"]).chain_id
        client.revoke(lasting)
        client.revoke_subject("mallory")
        client.revoke_client("search")
        wait_until_past(expiry_of_chain(client, brief_child.chain_id))

        everything = follow(client, delegation_pb2.WatchRevocationsRequest(), 5)
        snapshot_request = delegation_pb2.WatchRevocationsRequest(include_snapshot=True)
        received: list[delegation_pb2.WatchRevocationsResponse] = []
        snapshot_complete = threading.Event()

        def cold_gateway() -> None:
            stream = client.public.WatchRevocations(snapshot_request, timeout=STREAM_SECONDS)
            try:
                for message in stream:
                    received.append(message)
                    if message.type == delegation_pb2.WATCH_MESSAGE_TYPE_SNAPSHOT_COMPLETE:
                        snapshot_complete.set()
                    if len(received) == 5:
                        break
            finally:
                stream.cancel()

        follower = threading.Thread(target=cold_gateway)
        follower.start()
        # The marker tells the gateway (and this test) that the snapshot is all there: no sleeping.
        assert snapshot_complete.wait(STREAM_SECONDS)
        client.revoke_subject("trudy")
        follower.join(timeout=STREAM_SECONDS + 5)

    # Without the snapshot flag: every retained revocation, in force or not.
    assert [m.kind for m in everything] == [1, 2, 2, 3, 4]  # token, chain, chain, subject, client
    # With it: only those in force, oldest first, then the new one as it happened.
    in_force = [(m.type, m.kind, m.chain_id or m.subject or m.client_id) for m in received]
    revocation, complete = (
        delegation_pb2.WATCH_MESSAGE_TYPE_REVOCATION,
        delegation_pb2.WATCH_MESSAGE_TYPE_SNAPSHOT_COMPLETE,
    )
    assert in_force == [
        (revocation, 2, lasting_chain),
        (revocation, 3, "mallory"),
        (revocation, 4, "search"),
        (complete, 0, ""),
        (revocation, 3, "trudy"),
    ]
    assert received[3].cursor == received[2].cursor  # the marker names the last cursor of the snapshot
    assert received[3].server_time.seconds > 0
    revocations = [m for m in received if m.type == revocation]
    assert all(m.expire_time.seconds > time.time() for m in revocations)
    cursors = [m.cursor for m in revocations]
    assert cursors == sorted(cursors, key=lambda c: tuple(int(p) for p in c.split("-")))


def expiry_of_chain(client: DelegationClient, chain_id: str) -> int:
    """When the revocations of a chain stop mattering, as the stream publishes it."""
    events = follow(client, delegation_pb2.WatchRevocationsRequest(), 2)
    return max(m.expire_time.seconds for m in events if m.chain_id == chain_id)


def wait_until_past(moment: int) -> None:
    deadline = time.monotonic() + EXPIRY_WAIT_SECONDS
    while time.time() <= moment + 0.05:
        assert time.monotonic() < deadline, "the revocation never expired"
        time.sleep(0.1)


def test_the_snapshot_flag_is_ignored_when_resuming_from_a_cursor(private_stream: Harness) -> None:
    harness = private_stream
    with harness.client() as client:
        brief_parent = harness.parent(lifetime_seconds=2)
        client.delegate(brief_parent, "billing", ["warehouse.items.r"], lifetime_seconds=1)
        client.revoke_subject("first")
        client.revoke(brief_parent)
        client.revoke_subject("third")
        first, brief, _ = follow(client, delegation_pb2.WatchRevocationsRequest(), 3)
        wait_until_past(brief.expire_time.seconds)

        resumed = follow(
            client, delegation_pb2.WatchRevocationsRequest(cursor=first.cursor, include_snapshot=True), 2
        )

    # A resuming follower misses nothing after its cursor, expired or not.
    assert [m.kind for m in resumed] == [2, 3]
    assert resumed[1].subject == "third"
