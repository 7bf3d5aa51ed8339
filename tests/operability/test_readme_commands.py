"""The README's commands, run exactly as written against `delegation-service dev`, so they cannot rot.

Third-party tools against the service: `buf curl` (Buf's gRPC client, from PyPI's buf-bin) lists the
services through server reflection, calls grpc.health.v1, and calls Delegate, once granted and once
refused with the error details; `curl` reads the admin HTTP port. The Node block runs in `make interop`.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator

import pytest
from google.rpc import error_details_pb2

from tests.devserver import DevServer, start_dev
from tests.operability.readme import block, commands

BUF_PERMISSION_DENIED_EXIT = 8 * 7  # buf curl exits with 8 x the gRPC code


@pytest.fixture(scope="module")
def dev() -> Iterator[DevServer]:
    server = start_dev()
    yield server
    assert server.stop() == 0


def run(dev: DevServer, command: str) -> subprocess.CompletedProcess[str]:
    return dev.bash(f"set -o pipefail\n{command}")


def test_buf_curl_block_lists_services_checks_health_and_delegates(dev: DevServer) -> None:
    setup, list_services, health, granted, _refused = commands(block("grpc"))
    prefix = setup + "\n"

    listed = run(dev, prefix + list_services)
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) == {
        "delegation.v1.DelegationService",
        "delegation.v1.DelegationAdminService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }

    checked = run(dev, prefix + health)
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout) == {"status": "SERVING"}

    delegated = run(dev, prefix + granted)
    assert delegated.returncode == 0, delegated.stderr
    response = json.loads(delegated.stdout)
    assert response["scopes"] == ["warehouse.items.r"] and response["accessToken"].count(".") == 2
    assert response["clientId"] == "billing" and response["bearer"]["type"] == "BEARER_TYPE_PERSON"


def test_buf_curl_block_shows_the_error_details_of_a_refused_scope(dev: DevServer) -> None:
    setup, *_, refused = commands(block("grpc"))

    result = run(dev, f"{setup}\n{refused}")

    assert result.returncode == BUF_PERMISSION_DENIED_EXIT, result.stderr
    status = json.loads(result.stderr)
    assert status["code"] == "permission_denied"
    details = {d["type"]: base64.b64decode(d["value"]) for d in status["details"]}
    info = error_details_pb2.ErrorInfo.FromString(details["google.rpc.ErrorInfo"])
    assert info.reason == "SCOPE_NOT_ALLOWED_FOR_CLIENT" and info.domain == "delegation-service"
    assert info.metadata["scope"] == "directory.person.rw"
    bad_request = error_details_pb2.BadRequest.FromString(details["google.rpc.BadRequest"])
    assert [(v.field, v.reason) for v in bad_request.field_violations] == [
        ("scopes[0]", "SCOPE_NOT_ALLOWED_FOR_CLIENT")
    ]


def test_http_block_reads_metadata_jwks_readiness_and_metrics(dev: DevServer) -> None:
    metadata, jwks, ready, metrics = (run(dev, command) for command in commands(block("http")))

    for result in (metadata, jwks, ready, metrics):
        assert result.returncode == 0, result.stderr
    document = json.loads(metadata.stdout)
    assert document["jwks_uri"] == dev.env["DELEGATION_ADMIN_URL"] + "/.well-known/jwks.json"
    assert document["issuer"] == "https://delegation.dev.localhost"
    assert [key["kty"] for key in json.loads(jwks.stdout)["keys"]] == ["EC"]
    assert ready.stdout == "ok\n"
    assert metrics.stdout.startswith("grpc_server_handled_total{")
