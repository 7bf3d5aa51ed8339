"""The integration harness: a real server in-process on a loopback port, over a real Redis."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from delegation_service.adapters.upstream_dev import DevUpstreamIssuer
from delegation_service.app import Application, build, ephemeral_keys, load_catalog
from delegation_service.client import DelegationClient
from delegation_service.config import Config
from delegation_service.dev import demo_catalog_path
from delegation_service.domain.scopes import Bearer
from delegation_service.transport.auth import operator_secret_digest
from delegation_service.transport.server import RunningServer

SERVICE_ISSUER = "https://delegation.test.invalid"
UPSTREAM_ISSUER = "https://idp.test.invalid"
DELEGATION_SCOPE = "directory.delegations.rw"

SHORT_LIVED: dict[str, object] = {
    "leeway_seconds": 0,
    "default_lifetime_seconds": 2,
    "max_lifetime_seconds": 2,
    "max_parent_age_seconds": 3,
}
"""``start_harness`` overrides under which every record, marker, horizon and event expires within
seconds (parents of ``SHORT_LIVED_PARENT_SECONDS``), for tests that wait for Redis to empty."""
SHORT_LIVED_PARENT_SECONDS = 3


@dataclass
class Harness:
    """The running service and what tests need to talk to it."""

    app: Application
    server: RunningServer
    upstream: DevUpstreamIssuer
    operator_secret: str

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def client(self, operator: bool = True, timeout: float = 5.0) -> DelegationClient:
        return DelegationClient(self.address, timeout, self.operator_secret if operator else None)

    def parent(
        self,
        scopes: tuple[str, ...] = (DELEGATION_SCOPE, "directory.person.rw", "warehouse.items.rw"),
        subject: str = "alice",
        client_id: str = "gateway",
        lifetime_seconds: int = 3600,
        bearer: Bearer | None = None,
    ) -> str:
        """A fresh upstream parent token (a new chain)."""
        return self.upstream.mint(
            subject=subject,
            scopes=scopes,
            client_id=client_id,
            lifetime_seconds=lifetime_seconds,
            bearer=bearer,
        )


def build_test_app(**settings: object) -> tuple[Application, DevUpstreamIssuer, str]:
    """The application as ``serve`` builds it, on a loopback port the kernel picks, with an ephemeral
    signing key, the demo catalog, a test upstream issuer and a fresh operator secret."""
    secret = "dso_" + secrets.token_urlsafe(24)
    config = Config(
        listen="127.0.0.1:0",
        issuer=SERVICE_ISSUER,
        operator_token_sha256=(operator_secret_digest(secret),),
        **settings,  # type: ignore[arg-type]
    ).validate()
    upstream = DevUpstreamIssuer(UPSTREAM_ISSUER)
    app = build(
        config,
        keys=ephemeral_keys("ES256"),
        catalog=load_catalog(demo_catalog_path()),
        extra_trusted=[upstream.trusted_issuer()],
    )
    return app, upstream, secret


def start_harness(redis_url: str, **overrides: object) -> Harness:
    """Build and start the application over Redis at ``redis_url``."""
    app, upstream, secret = build_test_app(
        store="redis",
        redis_url=redis_url,
        # The suite's shared Redis keeps nothing on disk; tests of the persistence check override this.
        # Introspection open (loopback only), as on the dev server: these tests are about delegation and
        # revocation; tests/security covers the authenticated mode.
        **{
            "max_workers": 16,
            "redis_key_prefix": "it",
            "redis_allow_unsafe_persistence": True,
            "access_mode": "open",
            **overrides,
        },
    )
    return Harness(app, app.serve(), upstream, secret)
