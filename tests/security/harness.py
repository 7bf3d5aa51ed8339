"""The service as production runs it (access.mode = authenticated), in-process on a loopback port.

Unlike the integration harness, introspection is not open, caller JWTs are on (operator and
introspection scopes), the upstream issuer requires an audience, and the test holds every key so the
forge can sign anything with them.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from delegation.v1 import admin_pb2_grpc, delegation_pb2, delegation_pb2_grpc
from delegation_service.adapters.clock import SystemClock
from delegation_service.adapters.jws import ACCESS_TOKEN_TYP
from delegation_service.adapters.jwt_codec import IssuerRules, TrustedIssuer
from delegation_service.adapters.keys import KeySet, SigningKey, generate_signing_key, load_jwks
from delegation_service.app import Application, build, build_registry, load_catalog
from delegation_service.config import Config
from delegation_service.dev import demo_catalog_path
from delegation_service.domain.ports import TokenRegistry
from delegation_service.transport.auth import operator_secret_digest
from delegation_service.transport.server import RunningServer
from tests.security.forge import Segment, merge, new_jti, signed

LOOPBACK = "127.0.0.1"
SERVICE_ISSUER = "https://delegation.security.test.invalid"
UPSTREAM_ISSUER = "https://idp.security.test.invalid"
SERVICE_AUDIENCE = "https://delegation.security.test.invalid/api"
OPERATOR_SCOPE = "delegation:operate"
INTROSPECTION_SCOPE = "delegation:introspect"
DELEGATION_SCOPE = "directory.delegations.rw"
UITPAS = "https://api.publiq.be/auth/uitpas"
PARENT_SCOPES = (DELEGATION_SCOPE, "directory.person.rw", "warehouse.items.rw", UITPAS)

_prefixes = itertools.count()


class AuditEvent(logging.LogRecord):
    """A record of the audit logger, for annotations only: ``delegation_service.audit.AuditLog`` sets the
    event's fields as attributes (``extra``), which ``logging.LogRecord`` cannot declare."""

    event: str
    outcome: str
    reason: str
    jti: str
    chain_id: str
    client_id: str
    bearer: str
    caller: str
    # Set by some events only.
    detail: str
    kind: str
    parent_jti: str


@dataclass
class SecureService:
    """A running service, its keys, and helpers to mint genuine and forged tokens for it."""

    app: Application
    running: RunningServer
    keys: KeySet
    upstream_key: SigningKey
    operator_secret: str
    channels: list[grpc.Channel] = field(default_factory=list)

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"{LOOPBACK}:{self.running.port}"

    def channel(
        self, credentials: grpc.ChannelCredentials | None = None, options: Sequence[tuple[str, Any]] = ()
    ) -> grpc.Channel:
        """A channel to the service (closed by :meth:`stop`); TLS when ``credentials`` are given."""
        if credentials is None:
            channel = grpc.insecure_channel(self.address, options=list(options))
        else:
            channel = grpc.secure_channel(self.address, credentials, options=list(options))
        self.channels.append(channel)
        return channel

    def stop(self) -> None:
        """Close the channels and stop the server."""
        for channel in self.channels:
            channel.close()
        self.running.stop(0)

    # -- tokens ------------------------------------------------------------------------------------

    def upstream_claims(self, **changes: Any) -> dict[str, Any]:
        """The claims of a genuine upstream parent (a new chain), with ``changes`` applied."""
        now = int(time.time())
        base = {
            "iss": UPSTREAM_ISSUER,
            "sub": "alice",
            "aud": SERVICE_AUDIENCE,
            "client_id": "gateway",
            "scope": " ".join(PARENT_SCOPES),
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "jti": new_jti(),
            "bearer": {"type": "Per", "id": "alice"},
        }
        return merge(base, changes)

    def upstream_header(self, **changes: Any) -> dict[str, Any]:
        """The header of a genuine upstream token, with ``changes`` applied."""
        return merge({"alg": "ES256", "typ": ACCESS_TOKEN_TYP, "kid": self.upstream_key.kid}, changes)

    def upstream(
        self,
        header: Mapping[str, Any] | None = None,
        key: SigningKey | None = None,
        payload: Segment | None = None,
        **claims: Any,
    ) -> str:
        """An upstream token signed by the trusted issuer's key (or ``key``), with changes applied."""
        return signed(
            self.upstream_header(**(header or {})),
            payload if payload is not None else self.upstream_claims(**claims),
            key or self.upstream_key,
        )

    def own_claims(self, **changes: Any) -> dict[str, Any]:
        """The claims of a child token as this service would sign it (not recorded anywhere)."""
        now = int(time.time())
        base = {
            "iss": SERVICE_ISSUER,
            "sub": "alice",
            "aud": "warehouse",
            "client_id": "billing",
            "scope": "warehouse.items.r",
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "jti": new_jti(),
            "act": {"sub": "gateway"},
            "bearer": {"type": "Per", "id": "alice"},
            "parent_jti": new_jti(),
            "chain_id": new_jti(),
        }
        return merge(base, changes)

    def own(
        self, header: Mapping[str, Any] | None = None, key: SigningKey | None = None, **claims: Any
    ) -> str:
        """A token signed with this service's active key (a forged child: never recorded)."""
        active = key or self.keys.active
        head = merge({"alg": active.alg, "typ": ACCESS_TOKEN_TYP, "kid": active.kid}, header or {})
        return signed(head, self.own_claims(**claims), active)

    # -- stubs -------------------------------------------------------------------------------------

    def public(self, channel: grpc.Channel | None = None) -> Any:
        """A ``DelegationService`` stub."""
        return delegation_pb2_grpc.DelegationServiceStub(channel or self.channel())

    def admin(self, channel: grpc.Channel | None = None) -> Any:
        """A ``DelegationAdminService`` stub."""
        return admin_pb2_grpc.DelegationAdminServiceStub(channel or self.channel())

    def delegate(
        self,
        parent: str,
        client_id: str = "billing",
        scopes: Sequence[str] = ("warehouse.items.r",),
        *,
        lifetime: tuple[int, int] | None = None,
        channel: grpc.Channel | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        timeout: float = 5.0,
    ) -> delegation_pb2.DelegateResponse:
        """One Delegate call; ``lifetime`` is (seconds, nanos)."""
        request = delegation_pb2.DelegateRequest(
            parent_token=parent, client_id=client_id, scopes=list(scopes)
        )
        if lifetime is not None:
            request.lifetime.seconds, request.lifetime.nanos = lifetime
        response: delegation_pb2.DelegateResponse = self.public(channel).Delegate(
            request, timeout=timeout, metadata=list(metadata)
        )
        return response

    def operator_metadata(self) -> tuple[tuple[str, str]]:
        """``authorization: Bearer <operator secret>``."""
        return (("authorization", f"Bearer {self.operator_secret}"),)


def bearer(token: str) -> tuple[tuple[str, str]]:
    """Metadata presenting ``token`` as the caller's credential."""
    return (("authorization", f"Bearer {token}"),)


def start_service(
    redis_url: str,
    *,
    keys: KeySet | None = None,
    wrap_registry: Callable[[TokenRegistry], TokenRegistry] | None = None,
    upstream_rules: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> SecureService:
    """Build and start the service in authenticated mode over the given Redis (a fresh key prefix);
    ``upstream_rules`` are extra :class:`IssuerRules` for the upstream issuer."""
    secret = secrets.token_urlsafe(24)
    settings: dict[str, Any] = {
        "listen": f"{LOOPBACK}:0",
        "issuer": SERVICE_ISSUER,
        "store": "redis",
        "redis_url": redis_url,
        "redis_key_prefix": f"sec{next(_prefixes)}",
        "operator_token_sha256": (operator_secret_digest(secret),),
        "operator_scope": OPERATOR_SCOPE,
        "introspection_scope": INTROSPECTION_SCOPE,
        "max_workers": 16,
        # The suite's Redis keeps nothing on disk (the persistence check has tests of its own).
        "redis_allow_unsafe_persistence": True,
        **overrides,
    }
    config = Config(**settings).validate()
    keys = keys or KeySet(generate_signing_key("ES256"))
    upstream_key = generate_signing_key("ES256")
    trusted = TrustedIssuer(
        UPSTREAM_ISSUER,
        load_jwks({"keys": [dict(upstream_key.public_jwk)]}),
        IssuerRules(audience=SERVICE_AUDIENCE, **(upstream_rules or {})),
    )
    registry = build_registry(config, SystemClock())
    if wrap_registry is not None:
        registry = wrap_registry(registry)
    app = build(
        config,
        keys=keys,
        registry=registry,
        catalog=load_catalog(demo_catalog_path()),
        extra_trusted=[trusted],
    )
    return SecureService(app, app.serve(), keys, upstream_key, secret)
