"""Sender-constrained tokens (RFC 7800 ``cnf``): which key a token is bound to, and a child's binding.

A bound token is usable only with proof of its key: a DPoP proof (RFC 9449, ``cnf.jkt``: the key's
RFC 7638 thumbprint) or the mutual-TLS client certificate (RFC 8705, ``cnf.x5t#S256``: the SHA-256 of
the certificate's DER). Exchange never loses the binding (keycloak#50963 is the failure to avoid): a
child of a bound parent is obtained only with proof of the parent's key, and is bound itself.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from delegation_service.domain.encoding import b64url_encode
from delegation_service.domain.errors import InvalidRequest, ProofOfPossessionRequired, Reason, Violation

JKT = "jkt"
X5T_S256 = "x5t#S256"
_THUMBPRINT = re.compile(r"[A-Za-z0-9_-]{43}")
"""A base64url SHA-256 digest without padding: 43 characters."""


def certificate_thumbprint(der: bytes) -> str:
    """RFC 8705 ``x5t#S256`` of a certificate: the base64url SHA-256 of its DER, without padding."""
    return b64url_encode(hashlib.sha256(der).digest())


def is_thumbprint(value: str) -> bool:
    """Whether ``value`` has the shape of a base64url SHA-256 thumbprint (RFC 7638, RFC 8705)."""
    return _THUMBPRINT.fullmatch(value) is not None


@dataclass(frozen=True)
class Confirmation:
    """The ``cnf`` claim of a bound token: a DPoP key thumbprint and/or a certificate thumbprint."""

    jkt: str | None = None
    x5t_s256: str | None = None

    def __post_init__(self) -> None:
        if self.jkt is None and self.x5t_s256 is None:
            raise ValueError("a confirmation names at least one key")

    def claim(self) -> dict[str, str]:
        """The ``cnf`` claim's members."""
        members = {}
        if self.jkt is not None:
            members[JKT] = self.jkt
        if self.x5t_s256 is not None:
            members[X5T_S256] = self.x5t_s256
        return members

    @property
    def token_type(self) -> str:
        """The ``token_type`` a holder presents it with: ``DPoP`` for a DPoP-bound token (RFC 9449 §5)."""
        return "DPoP" if self.jkt is not None else "Bearer"


@dataclass(frozen=True)
class PossessionProof:
    """What the transport proved the caller holds: a DPoP key it signed a valid proof with (that key's
    thumbprint), and the thumbprint of the client certificate of its mutual-TLS connection."""

    dpop_jkt: str | None = None
    certificate_x5t_s256: str | None = None


NO_PROOF = PossessionProof()


def child_confirmation(
    parent: Confirmation | None, proof: PossessionProof, requested_jkt: str | None = None
) -> Confirmation | None:
    """The binding of a child of ``parent``, or refuse with :class:`ProofOfPossessionRequired`.

    * A bound parent needs proof of each of its keys (a DPoP proof by its ``jkt``, the certificate of
      its ``x5t#S256``); without it nothing is minted.
    * ``requested_jkt``, a key the caller names for the target subsystem (RFC 9449 ``dpop_jkt``), binds
      the child to that key: the child is then usable only by the subsystem holding it.
    * Otherwise a bound parent's child carries the parent's binding, and an unbound parent's child is
      bound to the key of the DPoP proof that came with the request, if any (RFC 9449 §5).
    """
    if requested_jkt is not None and not is_thumbprint(requested_jkt):
        raise InvalidRequest(
            violations=[
                Violation(
                    "dpop_jkt",
                    requested_jkt,
                    Reason.INVALID_REQUEST,
                    "dpop_jkt is the base64url SHA-256 thumbprint of a JWK (RFC 7638)",
                )
            ]
        )
    if parent is not None:
        if parent.jkt is not None and proof.dpop_jkt != parent.jkt:
            detail = "no DPoP proof" if proof.dpop_jkt is None else "DPoP proof by another key"
            raise ProofOfPossessionRequired(detail)
        if parent.x5t_s256 is not None and proof.certificate_x5t_s256 != parent.x5t_s256:
            raise ProofOfPossessionRequired("no client certificate of the parent's binding")
    if requested_jkt is not None:
        return Confirmation(jkt=requested_jkt)
    if parent is not None:
        return parent
    if proof.dpop_jkt is not None:
        return Confirmation(jkt=proof.dpop_jkt)
    return None
