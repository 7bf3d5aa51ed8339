"""An in-process service with its admin HTTP port, on loopback ports the kernel picks."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from delegation_service.adapters.upstream_dev import DevUpstreamIssuer
from delegation_service.app import Application, RunningApplication
from delegation_service.client import DelegationClient
from tests.integration.harness import DELEGATION_SCOPE, build_test_app

HTTP_TIMEOUT_SECONDS = 5


@dataclass
class Service:
    """The running application and what tests need to call it over gRPC and HTTP."""

    app: Application
    running: RunningApplication
    upstream: DevUpstreamIssuer
    operator_secret: str

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.running.port}"

    @property
    def admin_url(self) -> str:
        assert self.running.admin is not None
        return f"http://127.0.0.1:{self.running.admin.port}"

    def client(self) -> DelegationClient:
        return DelegationClient(self.address, 5.0, self.operator_secret)

    def parent(self, scopes: tuple[str, ...] = (DELEGATION_SCOPE, "warehouse.items.rw")) -> str:
        return self.upstream.mint(subject="alice", scopes=scopes, client_id="gateway", lifetime_seconds=600)


@dataclass
class HttpAnswer:
    status: int
    headers: dict[str, str]
    body: bytes


def http(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> HttpAnswer:
    """One HTTP request to a loopback URL; HTTP errors are answers too."""
    assert url.startswith("http://127.0.0.1:")
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as response:
            return HttpAnswer(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as error:
        return HttpAnswer(error.code, dict(error.headers), error.read())


def start_service(**overrides: object) -> Service:
    """The application with its admin HTTP port, over the in-memory store."""
    app, upstream, secret = build_test_app(admin_listen="127.0.0.1:0", store="memory", **overrides)
    running = app.serve(admin=True)
    assert isinstance(running, RunningApplication)
    return Service(app, running, upstream, secret)


@pytest.fixture
def service() -> Iterator[Service]:
    running = start_service()
    yield running
    running.running.stop(0)
