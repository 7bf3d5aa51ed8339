"""DPoP proofs (RFC 9449): the JWS checked with the key in its own header, then the domain's rules.

A proof is a compact JWS with ``typ: dpop+jwt``, an asymmetric ``alg`` and the public ``jwk`` it is
signed with; its thumbprint (RFC 7638) is the key a bound token names in ``cnf.jkt``. Parsing is as
strict as for tokens (the same segment decoder: canonical base64url, one JSON object, no duplicate
members), and the proof is bounded in size before anything is parsed.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from typing import Any

from delegation_service.adapters.jws import decode_segment, decode_signature
from delegation_service.adapters.jwt_codec import compact_jws
from delegation_service.adapters.keys import ASYMMETRIC_ALGORITHMS, SigningKey, parse_public_jwk
from delegation_service.adapters.signatures import signature_check
from delegation_service.domain.dpop import (
    DpopClaims,
    ProofReplayCache,
    ProofWindow,
    access_token_hash,
    check_proof,
)
from delegation_service.domain.errors import InvalidDpopProof, ParentRejected
from delegation_service.domain.ports import Clock

MAX_PROOF_BYTES = 4096
PROOF_TYP = "dpop+jwt"


def make_proof(
    key: SigningKey, method: str, url: str, access_token: str | None = None, now: int | None = None
) -> str:
    """A DPoP proof for one request, signed with ``key`` (the CLI's ``dpop proof``, for curl users)."""
    claims: dict[str, object] = {
        "jti": secrets.token_urlsafe(16),
        "htm": method,
        "htu": url,
        "iat": int(time.time()) if now is None else now,
    }
    if access_token is not None:
        claims["ath"] = access_token_hash(access_token)
    jwk = {name: key.public_jwk[name] for name in key.public_jwk if name not in ("kid", "use")}
    header = {"typ": PROOF_TYP, "alg": key.alg, "jwk": jwk}
    return compact_jws(header, json.dumps(claims, separators=(",", ":")).encode(), key)


def parse_proof(proof: str) -> DpopClaims:
    """The claims of a proof whose signature verifies with its header's ``jwk``; else
    :class:`InvalidDpopProof` (its detail is a fixed phrase, never part of the proof)."""
    try:
        return _parse(proof)
    except InvalidDpopProof:
        raise
    except ParentRejected as refused:  # the shared segment decoder's refusal
        raise InvalidDpopProof(refused.detail) from None
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as error:
        raise InvalidDpopProof(f"malformed proof ({type(error).__name__})") from None


def _parse(proof: str) -> DpopClaims:
    if len(proof) > MAX_PROOF_BYTES or not proof.isascii():
        raise InvalidDpopProof("proof too large or not ASCII")
    segments = proof.split(".")
    if len(segments) != 3 or not segments[2]:
        raise InvalidDpopProof("not a signed compact JWS")
    header = decode_segment(segments[0], "header")
    if header.get("typ") != PROOF_TYP:
        raise InvalidDpopProof("typ is not dpop+jwt")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ASYMMETRIC_ALGORITHMS:
        raise InvalidDpopProof("alg is not an allowed asymmetric algorithm")
    if "crit" in header:
        raise InvalidDpopProof("crit is not supported")
    jwk = header.get("jwk")
    if not isinstance(jwk, Mapping):
        raise InvalidDpopProof("no jwk in the header")
    if jwk.get("alg", alg) != alg:
        raise InvalidDpopProof("the jwk's alg is not the proof's")
    try:
        key = parse_public_jwk({**jwk, "alg": alg})  # refuses private members and unfit keys
    except ValueError:
        raise InvalidDpopProof("the jwk is not a usable public key") from None
    signature = decode_signature(segments[2])
    signing_input = f"{segments[0]}.{segments[1]}".encode("ascii")
    # High-S ECDSA accepted: malleability gives a proof a twin with the same jti, which replay refuses.
    if signature is None or not signature_check(key, allow_high_s=True)(signature, signing_input):
        raise InvalidDpopProof("bad signature")
    claims = decode_segment(segments[1], "payload")
    return DpopClaims(
        jkt=key.thumbprint,
        jti=_string(claims, "jti"),
        htm=_string(claims, "htm"),
        htu=_string(claims, "htu"),
        iat=_integer(claims, "iat"),
        ath=_optional_string(claims, "ath"),
        nonce=_optional_string(claims, "nonce"),
    )


def _string(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidDpopProof(f"{name} missing or not a string")
    return value


def _optional_string(claims: Mapping[str, Any], name: str) -> str | None:
    return None if claims.get(name) is None else _string(claims, name)


def _integer(claims: Mapping[str, Any], name: str) -> int:
    value = claims.get(name)
    if type(value) is not int:  # not bool, not float
        raise InvalidDpopProof(f"{name} missing or not an integer")
    return value


class DpopVerifier:
    """Checks a proof fully for one request: signature, htm, htu, iat window, jti replay, ath."""

    def __init__(self, replay: ProofReplayCache, clock: Clock, window: ProofWindow | None = None) -> None:
        self._replay = replay
        self._clock = clock
        self._window = window or ProofWindow()

    def verify(
        self,
        proof: str,
        *,
        method: str,
        url: str,
        access_token: str | None = None,
        require_ath: bool = False,
    ) -> str:
        """The thumbprint of the key that signed an acceptable proof; :class:`InvalidDpopProof` else."""
        claims = parse_proof(proof)
        check_proof(
            claims,
            method=method,
            url=url,
            now=self._clock.now(),
            window=self._window,
            replay=self._replay,
            access_token=access_token,
            require_ath=require_ath,
        )
        return claims.jkt
