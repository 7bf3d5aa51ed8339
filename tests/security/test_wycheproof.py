"""Project Wycheproof's signature vectors through our verifier's signature primitive.

``signatures.signature_check`` is what decides, for every token, whether a signature is valid. Each
vendored vector (``tests/security/vectors/``, see its README for the origin and licence) is run through
it with the key bound to the matching JOSE algorithm: a ``valid`` vector must verify, an ``invalid`` one
must not (truncated or padded signatures, ``r`` or ``s`` out of range, wrong encodings, modified
messages...), and an ``acceptable`` one may go either way (the JWS rules do not decide it). Today the
acceptable ones are Ed25519 signatures under small- or mixed-order public keys (cryptography accepts
them; our keys come only from a trusted issuer's JWKS, so the key policy is not the attacker's) and one
RSA PKCS#1 encoding per hash with a missing NULL parameter (refused).

ECDSA vectors whose ``s`` is in the upper half of the group order are ``valid`` for Wycheproof, but SPEC
§5 refuses high-S signatures (an ``(r, s)`` and its twin ``(r, n - s)`` would both verify). Whichever
layer enforces it, the primitive either accepts them all or refuses them all, and the low-S twin of
every valid vector always verifies.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from delegation_service.adapters.keys import PublicKey, VerificationKey
from delegation_service.adapters.signatures import signature_check

VECTORS = Path(__file__).parent / "vectors"

ALGORITHM_BY_FILE = {
    "ecdsa_secp256r1_sha256_p1363_test.json": "ES256",
    "ecdsa_secp384r1_sha384_p1363_test.json": "ES384",
    "ecdsa_secp521r1_sha512_p1363_test.json": "ES512",
    "ed25519_test.json": "EdDSA",
    "ed448_test.json": "EdDSA",
    "rsa_signature_2048_sha256_test.json": "RS256",
    "rsa_signature_2048_sha384_test.json": "RS384",
    "rsa_signature_2048_sha512_test.json": "RS512",
    "rsa_pss_2048_sha256_mgf1_32_test.json": "PS256",
}

_CURVE_FOR_ALG = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(), "ES512": ec.SECP521R1()}
_HASH_FOR_ALG = {"ES256": hashes.SHA256(), "ES384": hashes.SHA384(), "ES512": hashes.SHA512()}
# Group orders (SEC 2), to tell a high-S signature from a low-S one.
_ORDER = {
    "ES256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "ES384": int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973",
        16,
    ),
    "ES512": int(
        "01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFA"
        "51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409",
        16,
    ),
}


@dataclass(frozen=True)
class Outcome:
    """One vector: its id, Wycheproof's verdict and ours."""

    tc_id: int
    result: str
    accepted: bool
    high_s: bool = False
    twin_accepted: bool | None = None


def _recorded_digests() -> dict[str, str]:
    """The SHA-256 of each vendored file, as recorded in the vectors' README."""
    text = (VECTORS / "README.md").read_text(encoding="utf-8")
    return {name: digest for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+\.json)$", text, re.M)}


def _key(alg: str, group: dict[str, Any]) -> VerificationKey:
    loaded = serialization.load_der_public_key(bytes.fromhex(group["publicKeyDer"]))
    assert isinstance(loaded, PublicKey)
    return VerificationKey(kid="wycheproof", alg=alg, key=loaded, thumbprint="wycheproof")


def _run(name: str) -> list[Outcome]:
    alg = ALGORITHM_BY_FILE[name]
    data = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    outcomes = []
    for group in data["testGroups"]:
        check = signature_check(_key(alg, group))
        for test in group["tests"]:
            signature, message = bytes.fromhex(test["sig"]), bytes.fromhex(test["msg"])
            accepted = check(signature, message)
            high_s, twin_accepted = False, None
            if alg in _ORDER and test["result"] == "valid":
                size = len(signature) // 2
                order = _ORDER[alg]
                s = int.from_bytes(signature[size:], "big")
                high_s = s > order // 2
                twin = signature[:size] + (min(s, order - s)).to_bytes(size, "big")
                twin_accepted = check(twin, message)
            outcomes.append(Outcome(test["tcId"], test["result"], accepted, high_s, twin_accepted))
    assert len(outcomes) == data["numberOfTests"]
    return outcomes


def _high_s_refused_by_primitive(alg: str) -> bool:
    """Whether ``signature_check`` itself refuses a high-S twin of a genuine signature."""
    private = ec.generate_private_key(_CURVE_FOR_ALG[alg])
    key = VerificationKey("probe", alg, private.public_key(), "probe")
    size = (private.curve.key_size + 7) // 8
    order = _ORDER[alg]
    r, s = decode_dss_signature(private.sign(b"probe", ec.ECDSA(_HASH_FOR_ALG[alg])))
    high = max(s, order - s)
    return not signature_check(key)(r.to_bytes(size, "big") + high.to_bytes(size, "big"), b"probe")


def test_vendored_vectors_are_the_recorded_unmodified_files() -> None:
    recorded = _recorded_digests()
    assert set(recorded) == set(ALGORITHM_BY_FILE)
    for name, digest in recorded.items():
        assert hashlib.sha256((VECTORS / name).read_bytes()).hexdigest() == digest, name


@pytest.mark.parametrize("name", sorted(ALGORITHM_BY_FILE))
def test_signature_primitive_agrees_with_wycheproof(name: str) -> None:
    outcomes = _run(name)
    alg = ALGORITHM_BY_FILE[name]
    refuses_high_s = alg in _ORDER and _high_s_refused_by_primitive(alg)
    wrong = [
        (o.tc_id, o.result, o.accepted)
        for o in outcomes
        if (o.result == "invalid" and o.accepted)
        or (o.result == "valid" and o.accepted != (not (o.high_s and refuses_high_s)))
    ]
    assert not wrong, f"{name}: (tcId, expected, accepted) disagreeing with Wycheproof: {wrong}"
    # The low-S form of every valid ECDSA signature verifies, whatever the high-S policy.
    assert all(o.twin_accepted for o in outcomes if o.twin_accepted is not None), name
    assert any(o.result == "valid" for o in outcomes) and any(o.result == "invalid" for o in outcomes)
