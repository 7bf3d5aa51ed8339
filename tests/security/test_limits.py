"""Limits: overload answers RESOURCE_EXHAUSTED at once, silent clients are dropped by the handshake
timeout, and a deadline that leaves no time to mint gets DEADLINE_EXCEEDED with nothing minted.

(Message size, metadata size and the number and length of scopes are rows of the adversarial table.)
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any, cast

import grpc
import pytest

from delegation.v1 import delegation_pb2
from delegation_service.audit import AUDIT_LOGGER
from delegation_service.client import error_details
from delegation_service.domain.ports import MintOutcome, TokenRegistry
from delegation_service.domain.revocation import StateSnapshot, TokenRecord
from tests.security.harness import AuditEvent, SecureService, start_service

HANDSHAKE_SECONDS = 1.0
SLOW_READ_SECONDS = 0.4


class SlowRegistry:
    """A registry whose state reads and mints answer ``delay`` seconds late (a store under load)."""

    def __init__(self, inner: TokenRegistry, delay: float) -> None:
        self._inner = inner
        self._delay = delay
        self.writes = 0

    def snapshot(self, expected: TokenRecord) -> StateSnapshot:
        time.sleep(self._delay)
        return self._inner.snapshot(expected)

    def mint(self, root: TokenRecord, child: TokenRecord) -> MintOutcome:
        outcome = self._inner.mint(root, child)
        self.writes += outcome.recorded
        time.sleep(self._delay)
        return outcome

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


# --- overload ------------------------------------------------------------------------------------------


@pytest.fixture
def small(redis_server: Any) -> Iterator[tuple[SecureService, list[SlowRegistry]]]:
    """A server with two unary slots and one stream slot, over a store that answers reads slowly."""
    made: list[SlowRegistry] = []

    def wrap(registry: TokenRegistry) -> TokenRegistry:
        made.append(SlowRegistry(registry, OVERLOAD_READ_SECONDS))
        return made[-1]

    service = start_service(
        redis_server.url, max_concurrent_rpcs=2, max_streams=1, max_workers=4, wrap_registry=wrap
    )
    yield service, made
    service.stop()


OVERLOAD_READ_SECONDS = 3.0


def test_overload_answers_resource_exhausted_at_once_and_recovers(
    small: tuple[SecureService, list[SlowRegistry]],
) -> None:
    service, _ = small
    operator = list(service.operator_metadata())
    children = [service.delegate(service.upstream(), timeout=15).access_token for _ in range(2)]
    # The stream slot is taken by a follower: streams have a budget of their own...
    stream = service.public(service.channel()).WatchRevocations(
        delegation_pb2.WatchRevocationsRequest(include_snapshot=True), timeout=30, metadata=operator
    )
    assert next(stream).type == delegation_pb2.WATCH_MESSAGE_TYPE_SNAPSHOT_COMPLETE
    # ...so the unary slots are still free: two slow introspections take them.
    slow_calls = [
        service.public(service.channel()).Introspect.future(
            delegation_pb2.IntrospectRequest(token=child), timeout=15, metadata=operator
        )
        for child in children
    ]
    time.sleep(0.5)  # let both reach the (slow) store

    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as raised:
        service.public().GetJwks(delegation_pb2.GetJwksRequest(), timeout=10)
    assert raised.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert time.monotonic() - started < 2, "an overloaded server must refuse at once, not queue"

    assert all(call.result().active for call in slow_calls)
    stream.cancel()
    # Slots are released as the calls end: bounded wait for recovery.
    codes = []
    for _ in range(50):
        try:
            service.public().GetJwks(delegation_pb2.GetJwksRequest(), timeout=2)
        except grpc.RpcError as error:
            codes.append(error.code())
            time.sleep(0.1)
        else:
            break
    else:
        pytest.fail("the server never recovered from overload")
    assert set(codes) <= {grpc.StatusCode.RESOURCE_EXHAUSTED}


# --- handshake timeout ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick(redis_server: Any) -> Iterator[SecureService]:
    service = start_service(redis_server.url, handshake_timeout_seconds=HANDSHAKE_SECONDS)
    yield service
    service.stop()


def seconds_until_closed(service: SecureService, send: bytes = b"") -> float:
    host, port = service.address.split(":")
    started = time.monotonic()
    with (
        socket.create_connection((host, int(port)), timeout=15) as raw,
        contextlib.suppress(ConnectionResetError),
    ):
        if send:
            raw.sendall(send)
        while raw.recv(4096):  # the server may answer (SETTINGS) before it gives up on us
            pass
    return time.monotonic() - started


def test_a_silent_client_is_dropped_within_the_handshake_timeout(quick: SecureService) -> None:
    assert HANDSHAKE_SECONDS * 0.5 <= seconds_until_closed(quick) < HANDSHAKE_SECONDS + 3


def test_a_client_stalling_in_the_http2_preface_is_dropped_too(quick: SecureService) -> None:
    assert seconds_until_closed(quick, b"PRI * HTTP/2.0\r\n") < HANDSHAKE_SECONDS + 3


def test_the_handshake_timeout_does_not_hurt_normal_clients(quick: SecureService) -> None:
    channel = quick.channel()
    quick.delegate(quick.upstream(), channel=channel)
    time.sleep(HANDSHAKE_SECONDS * 1.5)  # an established connection is not subject to it
    quick.delegate(quick.upstream(), channel=channel)


# --- deadlines -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow(redis_server: Any) -> Iterator[tuple[SecureService, list[SlowRegistry]]]:
    made: list[SlowRegistry] = []

    def wrap(registry: TokenRegistry) -> TokenRegistry:
        made.append(SlowRegistry(registry, SLOW_READ_SECONDS))
        return made[-1]

    service = start_service(redis_server.url, wrap_registry=wrap)
    yield service, made
    service.stop()


def test_no_token_is_signed_when_the_deadline_runs_out_while_minting(
    slow: tuple[SecureService, list[SlowRegistry]], caplog: pytest.LogCaptureFixture
) -> None:
    """The store answers the mint after the caller's deadline: the service answers DEADLINE_EXCEEDED and
    signs nothing (the check runs again after recording). Parent check and recording are one store step,
    so the record is there: a record of a token nobody holds, as a crash between the two would leave."""
    service, (registry,) = slow
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    writes_before = registry.writes

    with pytest.raises(grpc.RpcError) as raised:
        service.delegate(service.upstream(), timeout=SLOW_READ_SECONDS / 2)
    assert error_details(raised.value).code is grpc.StatusCode.DEADLINE_EXCEEDED

    # The server goes on until its own check; wait (bounded) for its audit event.
    events: list[AuditEvent] = []
    for _ in range(50):
        events = [
            r for r in cast("list[AuditEvent]", caplog.records) if getattr(r, "event", "") == "delegate"
        ]
        if events:
            break
        time.sleep(0.05)
    assert [(e.outcome, e.reason) for e in events] == [("error", "DEADLINE_TOO_SHORT")]
    assert registry.writes == writes_before + 1


def test_a_deadline_with_time_to_spare_mints(slow: tuple[SecureService, list[SlowRegistry]]) -> None:
    service, (registry,) = slow
    writes_before = registry.writes
    assert service.delegate(service.upstream(), timeout=SLOW_READ_SECONDS * 5).access_token
    assert registry.writes == writes_before + 1
