"""Token claims in domain terms: what a verified token says, what a child token will say, its lifetime."""

from __future__ import annotations

import enum
import functools
import hashlib
from dataclasses import dataclass

from delegation_service.domain.encoding import b64url_encode
from delegation_service.domain.errors import LifetimeRefused, Reason
from delegation_service.domain.scopes import Bearer, Scope, format_scopes


class TokenKind(enum.Enum):
    """Where a token comes from: a trusted upstream issuer (a chain root) or this service."""

    UPSTREAM = "upstream"
    DELEGATED = "delegated"


@dataclass(frozen=True)
class VerifiedToken:
    """The claims of a token whose signature, issuer and times have been verified."""

    kind: TokenKind
    token_id: str
    chain_id: str
    issuer: str
    subject: str
    client_id: str
    audiences: tuple[str, ...]
    scopes: tuple[str, ...]
    bearer: Bearer
    issued_at: int
    expires_at: int
    parent_token_id: str | None = None
    actor_client_id: str | None = None


@dataclass(frozen=True)
class ChildToken:
    """A child token about to be signed: RFC 9068 claims plus the delegation facts (SPEC §4)."""

    token_id: str
    chain_id: str
    parent_token_id: str
    issuer: str
    subject: str
    audiences: tuple[str, ...]
    client_id: str
    actor_client_id: str
    scopes: tuple[Scope, ...]
    bearer: Bearer
    issued_at: int
    expires_at: int

    @functools.cached_property
    def scope_claim(self) -> str:
        """The space-separated ``scope`` claim, with no bearer prefixes (built once: the audit event and
        the signed claims both read it)."""
        return format_scopes(self.scopes)

    def claims(self) -> dict[str, object]:
        """The JWT claims set."""
        bearer: dict[str, object] = {"type": self.bearer.type.value}
        if self.bearer.id is not None:
            bearer["id"] = self.bearer.id
        return {
            "iss": self.issuer,
            "sub": self.subject,
            "aud": list(self.audiences) if len(self.audiences) != 1 else self.audiences[0],
            "client_id": self.client_id,
            "scope": self.scope_claim,
            "iat": self.issued_at,
            "nbf": self.issued_at,
            "exp": self.expires_at,
            "jti": self.token_id,
            "act": {"sub": self.actor_client_id},
            "bearer": bearer,
            "parent_jti": self.parent_token_id,
            "chain_id": self.chain_id,
        }


def root_chain_id(issuer: str, token_id: str) -> str:
    """The chain id of an upstream token: stable, opaque, safe inside a Redis hash tag."""
    digest = hashlib.sha256(f"{issuer}\x00{token_id}".encode()).digest()[:16]
    return b64url_encode(digest)


def token_fingerprint(signing_input: str) -> str:
    """An id for an upstream token that carries no ``jti``: a hash of its header and payload.

    Never of the signature bytes (SPEC §5): an ECDSA signature has a twin that verifies too, so an id
    over the whole token would give a re-encoded copy of a revoked parent a fresh, unrevoked identity.
    """
    digest = hashlib.sha256(signing_input.encode()).digest()
    return "sha256:" + b64url_encode(digest)


@dataclass(frozen=True)
class LifetimePolicy:
    """Default and maximum child lifetimes, in seconds."""

    default_seconds: int
    maximum_seconds: int

    def __post_init__(self) -> None:
        if not 0 < self.default_seconds <= self.maximum_seconds:
            raise ValueError("lifetimes must satisfy 0 < default <= maximum")

    def child_expiry(self, now: int, parent_expires_at: int, requested_seconds: int | None) -> int:
        """``min(now + requested-or-default, parent exp, now + maximum)`` (SPEC §3.10).

        A requested lifetime that outlives the parent is refused, never silently cut; so is any child of
        a parent with no life left (accepted within the clock leeway), which would be born expired.
        """
        if parent_expires_at <= now:
            raise LifetimeRefused(Reason.EXPIRES_AFTER_PARENT, "the parent token has no lifetime left")
        if requested_seconds is not None:
            if requested_seconds <= 0:
                raise LifetimeRefused(Reason.INVALID_LIFETIME, "the requested lifetime must be positive")
            if now + requested_seconds > parent_expires_at:
                raise LifetimeRefused(
                    Reason.EXPIRES_AFTER_PARENT, "the requested lifetime outlives the parent token"
                )
        wanted = self.default_seconds if requested_seconds is None else requested_seconds
        return min(now + wanted, parent_expires_at, now + self.maximum_seconds)
