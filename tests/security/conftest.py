"""Fixtures of the security suite: the service in authenticated mode, a test PKI, a loopback trap."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.security.harness import SecureService, start_service
from tests.security.pki import Pki, make_pki


@pytest.fixture(scope="module")
def secure(redis_server: Any) -> Iterator[SecureService]:
    """The service as production runs it (access.mode = authenticated), over the real Redis."""
    service = start_service(redis_server.url)
    yield service
    service.stop()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, a server certificate and client certificates, generated now (no key is committed)."""
    return make_pki(Path(tmp_path_factory.mktemp("pki")))


@dataclass
class Trap:
    """A loopback listener that nobody should ever connect to."""

    sock: socket.socket

    @property
    def url(self) -> str:
        """An https URL pointing at the trap."""
        host, port = self.sock.getsockname()
        return f"https://{host}:{port}/jwks.json"

    def connections(self, wait: float = 0.3) -> int:
        """How many connections arrived (accepting them), waiting up to ``wait`` seconds for a first."""
        count = 0
        while select.select([self.sock], [], [], wait if count == 0 else 0)[0]:
            connection, _ = self.sock.accept()
            connection.close()
            count += 1
            if count > 100:
                break
        return count


@pytest.fixture(scope="module")
def trap() -> Iterator[Trap]:
    """A loopback listener for jku/x5u URLs: the service must never connect to it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield Trap(sock)
    sock.close()
