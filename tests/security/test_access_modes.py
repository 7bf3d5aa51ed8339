"""The open mode of the dev server (introspection without credentials, on loopback only; operator
calls still need operator credentials), and the CLI's credentials in the authenticated mode."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from delegation.v1 import admin_pb2, delegation_pb2
from delegation_service import cli
from delegation_service.client import error_details
from delegation_service.config import is_loopback_listen
from delegation_service.dev import build_dev
from tests.security.harness import SecureService, start_service


@pytest.fixture(scope="module")
def open_service(redis_server: Any) -> Iterator[SecureService]:
    service = start_service(redis_server.url, access_mode="open")
    yield service
    service.stop()


def test_anyone_may_introspect_in_open_mode(open_service: SecureService) -> None:
    child = open_service.delegate(open_service.upstream()).access_token
    response = open_service.public().Introspect(delegation_pb2.IntrospectRequest(token=child), timeout=5)
    assert response.active


def test_operator_calls_still_need_operator_credentials_in_open_mode(open_service: SecureService) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        open_service.admin().RevokeSubject(admin_pb2.RevokeSubjectRequest(subject="alice"), timeout=5)
    details = error_details(raised.value)
    assert (details.code, details.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "OPERATOR_CREDENTIALS_REQUIRED",
    )


def test_the_dev_server_runs_open_on_loopback_only() -> None:
    app, _, _ = build_dev(0, None)
    assert app.config.access_mode == "open"
    assert is_loopback_listen(app.config.listen)


def test_the_cli_introspects_and_shows_a_chain_with_operator_credentials(
    secure: SecureService, capsys: pytest.CaptureFixture[str]
) -> None:
    """In authenticated mode the CLI sends its credential with Introspect too (chain show --token uses it)."""
    parent = secure.upstream()
    child = secure.delegate(parent).access_token
    common = ["--address", secure.address, f"--operator-token={secure.operator_secret}"]

    assert cli.main(["introspect", child, *common]) == cli.EXIT_OK
    assert cli.main(["chain", "show", "--token", parent, *common]) == cli.EXIT_OK
    assert (
        cli.main(["introspect", child, "--address", secure.address, "--operator-token", ""])
        == cli.EXIT_REFUSED
    )
    assert "CALLER_CREDENTIALS_REQUIRED" in capsys.readouterr().err
