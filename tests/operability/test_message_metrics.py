"""gRPC message counters and open streams (issue 14.9), read from /metrics by prometheus-client's parser.

py-grpc-prometheus names: ``grpc_server_msg_received_total`` and ``grpc_server_msg_sent_total`` per
method, so existing dashboards read them; ``grpc_server_open_streams`` counts streaming calls in progress.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import grpc
import pytest
from google.protobuf import duration_pb2

from delegation.v1 import delegation_pb2, delegation_pb2_grpc
from tests.devserver import REPO
from tests.operability.conftest import Service
from tests.operability.test_admin_http import scrape, value

SERVICE = "delegation.v1.DelegationService"
DELEGATE = {"grpc_type": "UNARY", "grpc_service": SERVICE, "grpc_method": "Delegate"}
WATCH = {"grpc_type": "SERVER_STREAMING", "grpc_service": SERVICE, "grpc_method": "WatchRevocations"}
SETTLE_SECONDS = 5.0


def test_unary_calls_count_one_message_in_and_one_out_when_answered(service: Service) -> None:
    before = scrape(service)
    with service.client() as client:
        client.delegate(service.parent(), "billing", ["warehouse.items.r"])
        with pytest.raises(grpc.RpcError):
            client.delegate(service.parent(), "billing", ["warehouse.nothing.r"])

    after = scrape(service)
    received = value(after, "grpc_server_msg_received_total", **DELEGATE)
    sent = value(after, "grpc_server_msg_sent_total", **DELEGATE)
    assert received - value(before, "grpc_server_msg_received_total", **DELEGATE) == 2
    # A refusal sends a status, not a message.
    assert sent - value(before, "grpc_server_msg_sent_total", **DELEGATE) == 1


def test_a_revocation_stream_counts_each_message_and_is_open_until_it_ends(service: Service) -> None:
    channel = grpc.insecure_channel(service.address)
    stub = delegation_pb2_grpc.DelegationServiceStub(channel)
    stream = stub.WatchRevocations(
        delegation_pb2.WatchRevocationsRequest(
            include_snapshot=True, heartbeat_interval=duration_pb2.Duration(seconds=1)
        ),
        timeout=30,
        metadata=(("authorization", f"Bearer {service.operator_secret}"),),
    )
    try:
        first = next(stream)  # the snapshot is empty: its end marker comes first
        second = next(stream)  # then a heartbeat, a second later
        assert first.type == delegation_pb2.WATCH_MESSAGE_TYPE_SNAPSHOT_COMPLETE
        assert second.type == delegation_pb2.WATCH_MESSAGE_TYPE_HEARTBEAT

        during = scrape(service)
        assert value(during, "grpc_server_open_streams", **WATCH) == 1
        assert value(during, "grpc_server_msg_received_total", **WATCH) == 1
        assert value(during, "grpc_server_msg_sent_total", **WATCH) >= 2
    finally:
        stream.cancel()
        channel.close()

    deadline = time.monotonic() + SETTLE_SECONDS
    while value(scrape(service), "grpc_server_open_streams", **WATCH) != 0:
        assert time.monotonic() < deadline, "the cancelled stream is still counted as open"
        time.sleep(0.05)
    assert value(scrape(service), "grpc_server_handled_total", **WATCH, grpc_code="CANCELLED") == 1


def test_dev_on_a_taken_port_says_so_in_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "delegation_service.cli", "dev", "--port", str(port)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    assert result.returncode == 2
    assert result.stdout == ""
    # Ours alone: no C-core "E1203 ... add_port.cc:83] Failed to add port" line before it.
    assert result.stderr.splitlines() == [
        f"cannot start: cannot listen on 127.0.0.1:{port}: Address already in use"
        f" (is another server on port {port}? try --port)"
    ]
