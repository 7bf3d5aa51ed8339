"""DPoP proofs (RFC 9449): the rules a proof's claims must meet, and the replay cache port.

Signature checking is the adapter's (:mod:`delegation_service.adapters.dpop`); this module is the
judgement of what was signed: the method and URL of the request (``htm``, ``htu``), a fresh ``iat``,
a ``jti`` never seen before for the key, and, when an access token comes with the proof, the hash of
that token (``ath``).
"""

from __future__ import annotations

import hashlib
import urllib.parse
from dataclasses import dataclass
from typing import Protocol

from delegation_service.domain.encoding import b64url_encode
from delegation_service.domain.errors import InvalidDpopProof

MAX_JTI_LENGTH = 256


@dataclass(frozen=True)
class DpopClaims:
    """A proof whose signature verified with the key in its own header (``jkt`` is that key's RFC 7638
    thumbprint): the claims still to judge."""

    jkt: str
    jti: str
    htm: str
    htu: str
    iat: int
    ath: str | None = None
    nonce: str | None = None


class ProofReplayCache(Protocol):
    """Remembers each proof's ``jti`` (per key) until the proof could no longer be accepted anyway.

    Implementations raise :class:`~delegation_service.domain.errors.StoreUnavailable` when the store
    cannot be reached: a proof that cannot be checked for replay is not accepted (fail closed).
    """

    def first_use(self, jkt: str, jti: str, expires_at: int) -> bool:
        """Record ``(jkt, jti)`` until ``expires_at``; ``True`` only the first time it is seen."""
        ...


@dataclass(frozen=True)
class ProofWindow:
    """How far a proof's ``iat`` may lie behind (``max_age_seconds``) or ahead of (``leeway_seconds``)
    the service's clock; a proof is remembered for replay as long as it could be accepted."""

    max_age_seconds: int = 60
    leeway_seconds: int = 5

    def remember_until(self, iat: int) -> int:
        """When the replay cache may forget a proof issued at ``iat``."""
        return iat + self.max_age_seconds + self.leeway_seconds + 1


def normalize_htu(url: str) -> str:
    """A URL as ``htu`` is compared (RFC 9449 §4.3): scheme and host lower case, the default port
    dropped, no query or fragment. Raises ``ValueError`` for something that is no absolute HTTP URL."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an absolute http(s) URL")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    netloc = host if port is None or port == {"http": 80, "https": 443}[scheme] else f"{host}:{port}"
    return urllib.parse.urlunsplit((scheme, netloc, parts.path or "/", "", ""))


def access_token_hash(access_token: str) -> str:
    """``ath``: the base64url SHA-256 of the access token's ASCII bytes (RFC 9449 §4.2)."""
    digest = hashlib.sha256(access_token.encode("ascii", "replace")).digest()
    return b64url_encode(digest)


def check_proof(
    claims: DpopClaims,
    *,
    method: str,
    url: str,
    now: int,
    window: ProofWindow,
    replay: ProofReplayCache,
    access_token: str | None = None,
    require_ath: bool = False,
) -> None:
    """Accept the proof for this request, or raise :class:`InvalidDpopProof` saying why not.

    The replay cache is asked last, so a proof refused for any other reason does not use up its jti.
    """
    if claims.htm != method:
        raise InvalidDpopProof("htm is not the request's method")
    try:
        if normalize_htu(claims.htu) != normalize_htu(url):
            raise InvalidDpopProof("htu is not the request's URL")
    except ValueError:
        raise InvalidDpopProof("htu is not an http(s) URL") from None
    if claims.iat > now + window.leeway_seconds:
        raise InvalidDpopProof("iat is in the future")
    if claims.iat < now - window.max_age_seconds:
        raise InvalidDpopProof("iat is too old")
    if not claims.jti or len(claims.jti) > MAX_JTI_LENGTH:
        raise InvalidDpopProof("jti missing or too long")
    if access_token is not None and claims.ath is not None:
        if claims.ath != access_token_hash(access_token):
            raise InvalidDpopProof("ath is not the hash of the presented token")
    elif require_ath:
        raise InvalidDpopProof("ath is required with an access token")
    if not replay.first_use(claims.jkt, claims.jti, window.remember_until(claims.iat)):
        raise InvalidDpopProof("jti already used (replay)")
