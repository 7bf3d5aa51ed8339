"""A stand-in upstream identity provider for the dev server (SPEC §7): never used in production.

``make run`` has no real identity provider to take a parent token from, so the dev server trusts this
issuer's ephemeral key and prints a parent token minted here, ready to paste into a ``Delegate`` call.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence

from delegation_service.adapters.clock import SystemClock
from delegation_service.adapters.jws import ACCESS_TOKEN_TYP
from delegation_service.adapters.jwt_codec import IssuerRules, TrustedIssuer, compact_jws
from delegation_service.adapters.keys import SigningKey, generate_signing_key, load_jwks
from delegation_service.domain.ports import Clock
from delegation_service.domain.scopes import Bearer, BearerType

DEV_UPSTREAM_ISSUER = "https://upstream.dev.invalid"
"""The dev issuer's ``iss``: ``.invalid`` (RFC 2606) so it can never name a real host."""


class DevUpstreamIssuer:
    """An ephemeral ES256 key and issuer name that mint upstream (root) access tokens for demos."""

    def __init__(
        self,
        issuer: str = DEV_UPSTREAM_ISSUER,
        *,
        key: SigningKey | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not issuer:
            raise ValueError("issuer must be non-empty")
        self._issuer = issuer
        self._key = key if key is not None else generate_signing_key("ES256")
        self._clock: Clock = clock if clock is not None else SystemClock()

    @property
    def issuer(self) -> str:
        """The ``iss`` of the tokens minted here."""
        return self._issuer

    @property
    def key(self) -> SigningKey:
        """The ephemeral signing key."""
        return self._key

    def mint(
        self,
        subject: str,
        scopes: Sequence[str],
        client_id: str,
        bearer: Bearer | None = None,
        lifetime_seconds: int = 3600,
    ) -> str:
        """An upstream access token (RFC 9068 profile) for ``subject`` holding ``scopes``.

        ``bearer`` defaults to the person ``subject``.
        """
        if lifetime_seconds <= 0:
            raise ValueError("lifetime_seconds must be positive")
        now = self._clock.now()
        bearer = bearer if bearer is not None else Bearer(BearerType.PERSON, subject)
        bearer_claim: dict[str, str] = {"type": bearer.type.value}
        if bearer.id is not None:
            bearer_claim["id"] = bearer.id
        claims: dict[str, object] = {
            "iss": self._issuer,
            "sub": subject,
            "client_id": client_id,
            "scope": " ".join(scopes),
            "iat": now,
            "nbf": now,
            "exp": now + lifetime_seconds,
            "jti": secrets.token_urlsafe(16),
            "bearer": bearer_claim,
        }
        payload = json.dumps(claims, separators=(",", ":")).encode("utf-8")
        return compact_jws(
            {"alg": self._key.alg, "kid": self._key.kid, "typ": ACCESS_TOKEN_TYP}, payload, self._key
        )

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The issuer's public JWK Set, as a real provider would publish it."""
        return {"keys": [dict(self._key.public_jwk)]}

    def trusted_issuer(self, audience: str | None = None) -> TrustedIssuer:
        """This issuer as the verifier should trust it (keys parsed from the published JWKS)."""
        return TrustedIssuer(self._issuer, load_jwks(self.jwks()), IssuerRules(audience=audience))
