"""Revocation streams at scale and at their edges, through a real channel and a real Redis (SPEC §5).

Open streams must never take the threads that unary calls and health need; past the configured cap a
new stream is refused at once; a follower asking for heartbeats hears from an idle feed; a cursor older
than the retained events is told so instead of silently missing them.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from delegation.v1 import delegation_pb2, delegation_pb2_grpc
from delegation_service.client import error_details
from tests.integration.harness import Harness, start_harness

pytestmark = pytest.mark.redis

STREAMS = 100
UNARY_DEADLINE_SECONDS = 2.0
"""A unary call or health check starved of workers would run into this deadline."""
OPEN_WAIT_SECONDS = 20.0


@pytest.fixture
def few_workers(redis_server: Any) -> Iterator[Harness]:
    """Two unary workers and room for the test's streams plus one: streams must not take the two."""
    harness = start_harness(
        redis_server.url,
        max_workers=2,
        max_streams=STREAMS + 1,
        redis_key_prefix=f"wst{secrets.token_hex(4)}",
    )
    yield harness
    harness.server.stop(0)


class OpenStreams:
    """``count`` WatchRevocations streams held open on one channel until :meth:`close`."""

    def __init__(self, address: str, count: int, request: delegation_pb2.WatchRevocationsRequest) -> None:
        self.channel = grpc.insecure_channel(address)
        stub = delegation_pb2_grpc.DelegationServiceStub(self.channel)
        self.calls = [stub.WatchRevocations(request, timeout=60) for _ in range(count)]
        self.first_messages: list[delegation_pb2.WatchRevocationsResponse] = []
        self.errors: list[grpc.RpcError] = []
        self._lock = threading.Lock()
        self._readers = [
            threading.Thread(target=self._read, args=(call,), daemon=True) for call in self.calls
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, call: Any) -> None:
        try:
            for message in call:
                with self._lock:
                    self.first_messages.append(message)
                return
        except grpc.RpcError as error:
            if error.code() is not grpc.StatusCode.CANCELLED:
                with self._lock:
                    self.errors.append(error)

    def close(self) -> None:
        for call in self.calls:
            call.cancel()
        for reader in self._readers:
            reader.join(timeout=5)
        self.channel.close()


def _wait_until(condition: Any, seconds: float = OPEN_WAIT_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_hundred_open_streams_leave_unary_calls_and_health_answering(few_workers: Harness) -> None:
    harness = few_workers
    snapshot = delegation_pb2.WatchRevocationsRequest(include_snapshot=True)
    streams = OpenStreams(harness.address, STREAMS, snapshot)
    try:
        # Every stream is open and past its snapshot (each got its SNAPSHOT_COMPLETE marker)...
        _wait_until(lambda: len(streams.first_messages) == STREAMS)
        assert {m.type for m in streams.first_messages} == {
            delegation_pb2.WATCH_MESSAGE_TYPE_SNAPSHOT_COMPLETE
        }
        assert harness.server.feed.open_streams == STREAMS
        # ...and still the two unary workers answer, within a deadline they would miss if starved.
        with harness.client(timeout=UNARY_DEADLINE_SECONDS) as client:
            for _ in range(5):
                child = client.delegate(harness.parent(), "billing", ["warehouse.items.r"])
                assert client.introspect(child.access_token).active
        with grpc.insecure_channel(harness.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            # types-grpcio-health-checking declares HealthStub without its methods.
            answer = health.Check(health_pb2.HealthCheckRequest(), timeout=UNARY_DEADLINE_SECONDS)  # type: ignore[attr-defined]
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        assert streams.errors == []
    finally:
        streams.close()


def test_past_the_cap_a_new_stream_gets_resource_exhausted_at_once(few_workers: Harness) -> None:
    harness = few_workers
    streams = OpenStreams(
        harness.address, STREAMS + 1, delegation_pb2.WatchRevocationsRequest(include_snapshot=True)
    )
    try:
        _wait_until(lambda: len(streams.first_messages) == STREAMS + 1)
        with grpc.insecure_channel(harness.address) as channel:
            stub = delegation_pb2_grpc.DelegationServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                next(iter(stub.WatchRevocations(delegation_pb2.WatchRevocationsRequest(), timeout=5)))
        details = error_details(refused.value)
        assert (details.code, details.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_STREAMS")
    finally:
        streams.close()
    # A slot freed is a slot taken again.
    _wait_until(lambda: harness.server.feed.open_streams == 0)
    with grpc.insecure_channel(harness.address) as channel:
        stub = delegation_pb2_grpc.DelegationServiceStub(channel)
        request = delegation_pb2.WatchRevocationsRequest(include_snapshot=True)
        first = next(iter(stub.WatchRevocations(request, timeout=5)))
        assert first.type == delegation_pb2.WATCH_MESSAGE_TYPE_SNAPSHOT_COMPLETE


def test_an_idle_follower_that_asks_for_heartbeats_gets_them(few_workers: Harness) -> None:
    harness = few_workers
    with harness.client() as client:
        client.revoke_subject("heartbeat-subject")
        request = delegation_pb2.WatchRevocationsRequest()
        request.heartbeat_interval.seconds = 1
        stream = client.public.WatchRevocations(request, timeout=15)
        messages: list[delegation_pb2.WatchRevocationsResponse] = []
        try:
            for message in stream:
                messages.append(message)
                if len(messages) == 3:
                    break
        finally:
            stream.cancel()
    revocation, heartbeat = messages[0], messages[1:]
    assert revocation.type == delegation_pb2.WATCH_MESSAGE_TYPE_REVOCATION
    assert revocation.subject == "heartbeat-subject"
    assert [m.type for m in heartbeat] == [delegation_pb2.WATCH_MESSAGE_TYPE_HEARTBEAT] * 2
    assert all(m.cursor == revocation.cursor for m in heartbeat)  # "you have everything up to here"
    assert heartbeat[1].server_time.seconds >= heartbeat[0].server_time.seconds > 0


def test_a_cursor_older_than_the_retained_events_gets_out_of_range(redis_server: Any) -> None:
    # Events retained for a second: the shortest retention the settings allow.
    harness = start_harness(
        redis_server.url,
        redis_key_prefix=f"wsx{secrets.token_hex(4)}",
        leeway_seconds=0,
        default_lifetime_seconds=1,
        max_lifetime_seconds=1,
        max_parent_age_seconds=1,
    )
    try:
        with harness.client() as client:
            for index in range(300):  # Redis trims whole stream nodes of 100 entries
                client.revoke_subject(f"old-{index}")
            first = next(
                iter(client.public.WatchRevocations(delegation_pb2.WatchRevocationsRequest(), timeout=5))
            )
            time.sleep(3)  # past the one-second retention of these settings (app.retention_seconds)
            client.revoke_subject("new")  # publishing trims what is past retention
            with pytest.raises(grpc.RpcError) as refused:
                list(
                    client.public.WatchRevocations(
                        delegation_pb2.WatchRevocationsRequest(cursor=first.cursor), timeout=5
                    )
                )
        details = error_details(refused.value)
        assert (details.code, details.reason) == (grpc.StatusCode.OUT_OF_RANGE, "CURSOR_EXPIRED")
    finally:
        harness.server.stop(0)
