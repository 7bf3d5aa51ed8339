"""Signature primitives for JWS: PyJWT's algorithm objects over ``cryptography`` keys, plus low-S.

The JOSE encodings (raw ``r || s`` for ECDSA, RFC 7518 §3.4; PSS with MGF1 and a salt as long as the
hash, §3.5) are PyJWT's :mod:`jwt.algorithms`; what is ours is only the stricter rule it lacks: an ECDSA
signature is accepted and produced in its low-S form only (SPEC §5), unless an upstream issuer is allowed
high-S. Each check or signing function is built once per key and algorithm, never per token.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import Algorithm, get_default_algorithms

from delegation_service.adapters.keys import (
    ASYMMETRIC_ALGORITHMS,
    SigningKey,
    VerificationKey,
    check_key_fits_algorithm,
)

# PyJWT's registry, filtered to what a verification key may be bound to: no "none", no HMAC.
_ALGORITHMS: Mapping[str, Algorithm] = MappingProxyType(
    {name: algorithm for name, algorithm in get_default_algorithms().items() if name in ASYMMETRIC_ALGORITHMS}
)

# The group orders of the JOSE curves (SEC 2): ECDSA's s and n - s both verify, so only s <= n / 2
# (low-S) is accepted and produced; one token then has one signature per (r, key), not two.
_CURVE_ORDERS: Mapping[str, int] = MappingProxyType(
    {
        "secp256r1": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
        "secp384r1": int(
            "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973",
            16,
        ),
        "secp521r1": int(
            "01FF"
            + "FFFFFFFF" * 7
            + "FFFFFFFA51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409",
            16,
        ),
    }
)

SignatureCheck = Callable[[bytes, bytes], bool]
"""``check(signature, signing_input)``: whether the signature is valid, for one key and one algorithm."""


def signature_check(
    key: VerificationKey, alg: str | None = None, *, allow_high_s: bool = False
) -> SignatureCheck:
    """A function that checks signatures made with ``key`` under ``alg`` (default: the key's own
    algorithm), and nothing else.

    An ECDSA signature must be low-S unless ``allow_high_s`` (an upstream issuer that does not normalise).
    ``ValueError`` for an algorithm outside :data:`ASYMMETRIC_ALGORITHMS` or a key that does not fit it
    (the key was checked against its algorithms when it was loaded; this is the last line).
    """
    alg = key.alg if alg is None else alg
    algorithm = _ALGORITHMS.get(alg)
    if algorithm is None:
        raise ValueError(f"algorithm {alg!r} is not an allowed asymmetric algorithm")
    public_key = key.key
    check_key_fits_algorithm(public_key, alg)
    verify = algorithm.verify
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or allow_high_s:

        def check(signature: bytes, signing_input: bytes) -> bool:
            return bool(verify(signing_input, public_key, signature))

        return check
    size = (public_key.curve.key_size + 7) // 8
    highest_s = _CURVE_ORDERS[public_key.curve.name] // 2

    def check_low_s(signature: bytes, signing_input: bytes) -> bool:
        # The length is PyJWT's to check (raw r || s of the curve's size); the high half of s is ours.
        if len(signature) == 2 * size and int.from_bytes(signature[size:], "big") > highest_s:
            return False  # the malleable twin of (r, n - s): refused (SPEC §5)
        return bool(verify(signing_input, public_key, signature))

    return check_low_s


def signature_function(key: SigningKey) -> Callable[[bytes], bytes]:
    """``sign(signing_input) -> JOSE signature`` for one of our signing keys (low-S for ECDSA)."""
    algorithm = _ALGORITHMS[key.alg]
    private_key = key.private_key
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        ec_key, curve = private_key, private_key.curve

        def sign_ecdsa(signing_input: bytes) -> bytes:
            return low_s(algorithm.sign(signing_input, ec_key), curve)

        return sign_ecdsa
    if isinstance(private_key, Ed25519PrivateKey | rsa.RSAPrivateKey):
        other_key = private_key

        def sign(signing_input: bytes) -> bytes:
            return algorithm.sign(signing_input, other_key)

        return sign
    raise ValueError("not a supported private key object")


def low_s(signature: bytes, curve: ec.EllipticCurve) -> bytes:
    """A JOSE ECDSA signature (``r || s``) in its low-S form, the only one the verifier accepts.

    ``cryptography`` (like most libraries) returns either twin at random; an issuer signing for us, or a
    test, normalises with this.
    """
    size = len(signature) // 2
    s = int.from_bytes(signature[size:], "big")
    order = _CURVE_ORDERS[curve.name]
    return signature[:size] + min(s, order - s).to_bytes(size, "big")
