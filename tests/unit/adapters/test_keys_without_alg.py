"""JWKS keys without ``alg`` (issue 18.2): the issuer's algorithm list decides what they may verify.

Many providers publish RSA keys without ``alg``. Such a key may verify every algorithm of the issuer's
list that fits its type (RSA: RS*/PS*; EC: its curve's; OKP: EdDSA), never ``none`` or HMAC; a key that
states ``alg`` stays bound to it. Tokens are signed here by PyJWT, an independent implementation.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from delegation_service.adapters.jwt_codec import IssuerRules, JwtVerifier, TrustedIssuer
from delegation_service.adapters.keys import (
    KeySet,
    PublicKey,
    algorithms_for,
    generate_signing_key,
    load_jwks,
    load_remote_jwks,
    public_jwk,
)
from delegation_service.adapters.signatures import low_s
from delegation_service.domain.encoding import b64url_decode, b64url_encode
from delegation_service.domain.errors import ParentRejected

ISSUER = "https://idp.example"
KID = "rsa-2026"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _bare_jwk(public_key: PublicKey, kid: str = KID) -> dict[str, str]:
    return {**public_jwk(public_key), "kid": kid, "use": "sig"}


def _verifier(jwk: dict[str, str], algorithms: Sequence[str]) -> JwtVerifier:
    issuer = TrustedIssuer(
        issuer=ISSUER,
        keys=load_jwks({"keys": [jwk]}, algorithms),
        rules=IssuerRules(algorithms=tuple(algorithms)),
    )
    return JwtVerifier("https://delegation.example", KeySet(generate_signing_key()), [issuer], 30)


def _token(private_key: Any, alg: str, kid: str = KID) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "svc", "client_id": "gw", "scope": "a.b.r", "iat": now, "exp": now + 60}
    token = jwt.encode(claims, private_key, algorithm=alg, headers={"kid": kid, "typ": "at+jwt"})
    if not isinstance(private_key, ec.EllipticCurvePrivateKey):
        return token
    # PyJWT returns either ECDSA twin; the verifier accepts only the low-S one (SPEC §5).
    signing_input, _, signature = token.rpartition(".")
    raw = b64url_decode(signature)
    return f"{signing_input}.{b64url_encode(low_s(raw, private_key.curve))}"


@pytest.mark.parametrize("alg", ["RS256", "PS256"])
def test_an_rsa_key_without_alg_verifies_what_the_issuer_allows(rsa_key: rsa.RSAPrivateKey, alg: str) -> None:
    verifier = _verifier(_bare_jwk(rsa_key.public_key()), ["RS256", "PS256"])
    assert verifier.verify(_token(rsa_key, alg)).subject == "svc"


def test_ps256_from_an_rsa_key_without_alg_is_refused_when_the_issuer_allows_only_rs256(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    verifier = _verifier(_bare_jwk(rsa_key.public_key()), ["RS256"])
    assert verifier.verify(_token(rsa_key, "RS256")).subject == "svc"
    with pytest.raises(ParentRejected) as refused:
        verifier.verify(_token(rsa_key, "PS256"))
    assert refused.value.detail == "algorithm not allowed"


def test_a_stated_alg_still_binds_the_key(rsa_key: rsa.RSAPrivateKey) -> None:
    jwk = {**_bare_jwk(rsa_key.public_key()), "alg": "RS256"}
    verifier = _verifier(jwk, ["RS256", "PS256"])
    assert verifier.verify(_token(rsa_key, "RS256")).subject == "svc"
    with pytest.raises(ParentRejected) as refused:
        verifier.verify(_token(rsa_key, "PS256"))
    assert refused.value.detail == "algorithm does not match the key"


def test_an_ec_key_without_alg_verifies_only_its_curve_algorithm() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    verifier = _verifier(_bare_jwk(private.public_key()), ["ES256", "ES384", "RS256", "PS256"])
    assert verifier.verify(_token(private, "ES256")).subject == "svc"
    with pytest.raises(ParentRejected) as refused:
        verifier.verify(_token(ec.generate_private_key(ec.SECP384R1()), "ES384"))
    assert refused.value.detail == "algorithm does not match the key"


def test_an_okp_key_without_alg_verifies_eddsa() -> None:
    private = Ed25519PrivateKey.generate()
    verifier = _verifier(_bare_jwk(private.public_key()), ["EdDSA", "ES256"])
    assert verifier.verify(_token(private, "EdDSA")).subject == "svc"


def test_hmac_with_the_public_key_is_never_possible(rsa_key: rsa.RSAPrivateKey) -> None:
    jwk = _bare_jwk(rsa_key.public_key())
    assert algorithms_for(jwk, ["HS256", "none", "RS256"]) == ("RS256",)
    verifier = _verifier(jwk, ["RS256", "PS256"])
    secret = jwk["n"].encode()  # the classic confusion: the public key as an HMAC secret
    forged = jwt.encode(
        {"iss": ISSUER, "sub": "x", "iat": 1, "exp": 2**31}, secret, algorithm="HS256", headers={"kid": KID}
    )
    with pytest.raises(ParentRejected) as refused:
        verifier.verify(forged)
    assert refused.value.detail == "algorithm not allowed"


@pytest.mark.parametrize(
    ("allowed", "expected"),
    [
        (["PS256", "RS256", "ES256"], ("PS256", "RS256")),
        (["RS512", "PS384"], ("RS512", "PS384")),
        (["ES256", "EdDSA"], ()),
    ],
)
def test_algorithms_for_an_rsa_key_follow_the_issuers_list_in_order(
    rsa_key: rsa.RSAPrivateKey, allowed: list[str], expected: tuple[str, ...]
) -> None:
    assert algorithms_for(_bare_jwk(rsa_key.public_key()), allowed) == expected


def test_a_key_no_allowed_algorithm_fits_is_refused_from_a_file_and_skipped_from_a_provider(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    rsa_jwk = _bare_jwk(rsa_key.public_key())
    with pytest.raises(ValueError, match="none of the issuer's algorithms"):
        load_jwks({"keys": [rsa_jwk]}, ["ES256"])
    ec_jwk = _bare_jwk(ec.generate_private_key(ec.SECP256R1()).public_key(), kid="ec")
    keys = load_remote_jwks({"keys": [rsa_jwk, ec_jwk]}, ["ES256"])
    assert list(keys) == ["ec"]
    assert keys["ec"].algorithms == frozenset({"ES256"})
