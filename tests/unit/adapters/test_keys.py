"""Signing keys, key sets and trusted JWKS parsing (SPEC §4: kid, JWKS, rotation, no private members)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc import jwk as joserfc_jwk

from delegation_service.adapters.keys import (
    PRIVATE_JWK_MEMBERS,
    KeySet,
    SigningKey,
    generate_signing_key,
    jwk_thumbprint,
    load_jwks,
    load_jwks_file,
    load_private_key_file,
    load_signing_key,
    public_jwk,
)

SIGNING_ALGS = ["ES256", "EdDSA", "RS256"]


@pytest.fixture(scope="module")
def signing_keys() -> dict[str, SigningKey]:
    # RSA generation is slow: one key per algorithm for the whole module.
    return {alg: generate_signing_key(alg) for alg in SIGNING_ALGS}


def _pem(key: SigningKey, password: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    return key.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def _private_jwk(key: SigningKey) -> dict[str, Any]:
    """The same key as a JWK *with* its private members, exported by an independent library."""
    key_type = {"ES256": "EC", "EdDSA": "OKP", "RS256": "RSA"}[key.alg]
    return dict(joserfc_jwk.import_key(_pem(key), key_type).as_dict(private=True))  # type: ignore[call-overload]


@pytest.mark.parametrize("alg", SIGNING_ALGS)
def test_kid_is_the_rfc7638_thumbprint_computed_by_joserfc(
    alg: str, signing_keys: dict[str, SigningKey]
) -> None:
    key = signing_keys[alg]
    independent = joserfc_jwk.import_key(dict(key.public_jwk))
    assert key.kid == independent.thumbprint()
    assert key.kid == jwk_thumbprint(key.public_key)


def test_thumbprint_matches_joserfc_for_a_p256_key_with_short_coordinates() -> None:
    # Regression guard: coordinates must keep their leading zero bytes (RFC 7518 §6.2.1.2), else one key
    # in 128 gets a wrong kid. Search for such a key rather than hoping one turns up.
    for _ in range(2000):
        private_key = ec.generate_private_key(ec.SECP256R1())
        numbers = private_key.public_key().public_numbers()
        if numbers.x.bit_length() <= 248 or numbers.y.bit_length() <= 248:
            break
    else:  # pragma: no cover - probability about 1e-7
        pytest.skip("no key with a short coordinate found")
    key = SigningKey(alg="ES256", private_key=private_key)
    assert len(key.public_jwk["x"]) == len(key.public_jwk["y"]) == 43
    assert key.kid == joserfc_jwk.import_key(dict(key.public_jwk)).thumbprint()


@pytest.mark.parametrize("alg", SIGNING_ALGS)
def test_pem_round_trip_keeps_the_kid(alg: str, signing_keys: dict[str, SigningKey], tmp_path: Path) -> None:
    key = signing_keys[alg]
    assert load_signing_key(_pem(key), alg).kid == key.kid
    path = tmp_path / "key.pem"
    path.write_bytes(_pem(key, password=b"s3cret"))
    loaded = load_private_key_file(path, alg, password=b"s3cret")
    assert loaded == key
    assert loaded.public_jwk["alg"] == alg


@pytest.mark.parametrize(
    ("pem_alg", "asked_alg"),
    [("ES256", "RS256"), ("ES256", "EdDSA"), ("EdDSA", "ES256"), ("RS256", "ES256")],
)
def test_a_key_of_the_wrong_type_for_the_algorithm_is_refused(
    pem_alg: str, asked_alg: str, signing_keys: dict[str, SigningKey]
) -> None:
    with pytest.raises(ValueError, match="needs"):
        load_signing_key(_pem(signing_keys[pem_alg]), asked_alg)


@pytest.mark.parametrize(
    ("alg", "private_key"),
    [
        pytest.param("ES256", ec.generate_private_key(ec.SECP384R1()), id="p384-for-es256"),
        pytest.param("RS256", rsa.generate_private_key(public_exponent=65537, key_size=1024), id="rsa-1024"),
        pytest.param("EdDSA", Ed448PrivateKey.generate(), id="ed448-signing"),
        pytest.param("ES256", "-----BEGIN PRIVATE KEY-----", id="pem-text-not-a-key-object"),
    ],
)
def test_weak_or_mismatched_signing_keys_are_refused(alg: str, private_key: Any) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies with the key
        SigningKey(alg=alg, private_key=private_key)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("pem", "alg", "message"),
    [
        (b"not a key", "ES256", "not a readable PEM"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "ES256", "not a readable PEM"),
        (b"", "ES256", "not a readable PEM"),
        (b"irrelevant", "HS256", "cannot sign"),
        (b"irrelevant", "none", "cannot sign"),
    ],
)
def test_unreadable_pem_or_unsupported_algorithm_is_refused(pem: bytes, alg: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        load_signing_key(pem, alg)
    assert "AAAA" not in str(raised.value)


def test_encrypted_pem_without_password_is_refused(signing_keys: dict[str, SigningKey]) -> None:
    with pytest.raises(ValueError, match="password"):
        load_signing_key(_pem(signing_keys["ES256"], password=b"pw"), "ES256")


def test_generate_refuses_algorithms_it_cannot_sign_with() -> None:
    with pytest.raises(ValueError, match="cannot sign"):
        generate_signing_key("HS256")


def test_signing_key_repr_never_shows_private_material(signing_keys: dict[str, SigningKey]) -> None:
    key = signing_keys["ES256"]
    text = repr(key)
    assert key.kid in text
    assert "private_key" not in text
    assert _private_jwk(key)["d"] not in text


@pytest.mark.parametrize("alg", SIGNING_ALGS)
def test_jwks_never_contains_private_members(alg: str, signing_keys: dict[str, SigningKey]) -> None:
    key_set = KeySet(signing_keys[alg], [k for a, k in signing_keys.items() if a != alg])
    jwks = key_set.jwks()
    assert len(jwks["keys"]) == 3
    for published in jwks["keys"]:
        assert not PRIVATE_JWK_MEMBERS & published.keys()
        assert published["use"] == "sig"
        # Only public members, and exactly the ones a verifier needs.
        assert set(published) <= {"kty", "crv", "x", "y", "n", "e", "kid", "alg", "use"}


def test_jwks_lists_the_active_key_first_and_is_a_fresh_copy(signing_keys: dict[str, SigningKey]) -> None:
    key_set = KeySet(signing_keys["EdDSA"], [signing_keys["ES256"]])
    jwks = key_set.jwks()
    assert [k["kid"] for k in jwks["keys"]] == [signing_keys["EdDSA"].kid, signing_keys["ES256"].kid]
    jwks["keys"][0]["d"] = "tampered"
    jwks["keys"].clear()
    assert "d" not in key_set.jwks()["keys"][0]
    with pytest.raises(TypeError):
        signing_keys["EdDSA"].public_jwk["d"] = "x"  # type: ignore[index]


def test_key_set_has_exactly_one_active_key_and_no_duplicates(signing_keys: dict[str, SigningKey]) -> None:
    es, ed = signing_keys["ES256"], signing_keys["EdDSA"]
    key_set = KeySet(es, [ed])
    assert key_set.active is es
    assert key_set.keys == (es, ed)
    assert key_set.get(ed.kid) is ed
    assert key_set.get("nope") is None
    assert set(key_set.verification_keys()) == {es.kid, ed.kid}
    with pytest.raises(ValueError, match="twice"):
        KeySet(es, [ed, es])


def test_rotate_makes_the_new_key_active_and_keeps_the_old_ones(signing_keys: dict[str, SigningKey]) -> None:
    es, ed, rs = signing_keys["ES256"], signing_keys["EdDSA"], signing_keys["RS256"]
    rotated = KeySet(es).rotate(ed)
    assert rotated.active is ed
    assert [k.kid for k in rotated.keys] == [ed.kid, es.kid]
    twice = rotated.rotate(rs, keep_previous=1)
    assert [k.kid for k in twice.keys] == [rs.kid, ed.kid]
    # Re-activating a key already in the set moves it to the front instead of duplicating it.
    assert [k.kid for k in twice.rotate(ed).keys] == [ed.kid, rs.kid]


# --- trusted issuers' JWKS ---------------------------------------------------------------------------


@pytest.mark.parametrize("alg", SIGNING_ALGS)
def test_load_jwks_parses_published_keys_once_into_key_objects(
    alg: str, signing_keys: dict[str, SigningKey]
) -> None:
    key = signing_keys[alg]
    parsed = load_jwks({"keys": [dict(key.public_jwk)]})
    assert list(parsed) == [key.kid]
    assert parsed[key.kid].alg == alg
    assert parsed[key.kid].thumbprint == key.kid
    assert not isinstance(parsed[key.kid].key, str | bytes)  # a key object, never PEM text


@pytest.mark.parametrize(("alg", "expected"), [("ES256", "ES256"), ("EdDSA", "EdDSA"), ("RS256", "RS256")])
def test_load_jwks_infers_alg_from_kty_and_crv_and_kid_from_the_thumbprint(
    alg: str, expected: str, signing_keys: dict[str, SigningKey]
) -> None:
    bare = {k: v for k, v in signing_keys[alg].public_jwk.items() if k not in ("alg", "kid", "use")}
    parsed = load_jwks({"keys": [bare]})
    (key,) = parsed.values()
    assert key.alg == expected
    assert key.kid == signing_keys[alg].kid


def test_load_jwks_infers_es384_from_p384() -> None:
    public = ec.generate_private_key(ec.SECP384R1()).public_key()
    bare = dict(
        joserfc_jwk.import_key(
            public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
            "EC",
        ).as_dict()
    )
    bare.pop("kid", None)
    (key,) = load_jwks({"keys": [bare]}).values()
    assert key.alg == "ES384"


def test_load_jwks_keeps_a_stated_kid_and_a_stated_ps256(signing_keys: dict[str, SigningKey]) -> None:
    jwk = {**signing_keys["RS256"].public_jwk, "alg": "PS256", "kid": "2024-rsa"}
    parsed = load_jwks({"keys": [jwk]})
    assert parsed["2024-rsa"].alg == "PS256"
    assert parsed["2024-rsa"].thumbprint == signing_keys["RS256"].kid


def _mutated(key: SigningKey, **changes: Any) -> dict[str, Any]:
    jwk: dict[str, Any] = copy.deepcopy(dict(key.public_jwk))
    for name, value in changes.items():
        if value is None:
            jwk.pop(name, None)
        else:
            jwk[name] = value
    return jwk


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(lambda k: _private_jwk(k["ES256"]), "private", id="ec-private-d"),
        pytest.param(lambda k: _private_jwk(k["RS256"]), "private", id="rsa-private-members"),
        pytest.param(lambda k: _private_jwk(k["EdDSA"]), "private", id="okp-private-d"),
        pytest.param(lambda k: {"kty": "oct", "k": "c2VjcmV0", "alg": "HS256"}, "private", id="oct-secret"),
        pytest.param(lambda k: {"kty": "oct", "alg": "HS256"}, "only EC, OKP and RSA", id="oct-no-k"),
        pytest.param(lambda k: _mutated(k["ES256"], alg="HS256"), "not an allowed", id="alg-hs256"),
        pytest.param(lambda k: _mutated(k["ES256"], alg="none"), "not an allowed", id="alg-none"),
        pytest.param(lambda k: _mutated(k["ES256"], alg=7), "must be a string", id="alg-not-string"),
        pytest.param(lambda k: _mutated(k["RS256"], alg="ES256"), "valid public key", id="alg-vs-kty"),
        pytest.param(lambda k: _mutated(k["ES256"], alg="ES384"), "curve", id="alg-vs-curve"),
        pytest.param(lambda k: _mutated(k["ES256"], use="enc"), "use", id="use-enc"),
        pytest.param(lambda k: _mutated(k["ES256"], key_ops=["encrypt"]), "key_ops", id="key-ops"),
        pytest.param(lambda k: _mutated(k["ES256"], kid=""), "kid", id="empty-kid"),
        pytest.param(lambda k: _mutated(k["ES256"], kid=5), "kid", id="kid-not-string"),
        pytest.param(lambda k: _mutated(k["ES256"], y=None), "valid public key", id="missing-y"),
        pytest.param(
            lambda k: _mutated(k["ES256"], y=k["ES256"].public_jwk["x"]), "valid public key", id="off-curve"
        ),
        pytest.param(lambda k: _mutated(k["ES256"], crv="P-999", alg=None), "no alg", id="unknown-crv"),
        pytest.param(
            lambda k: {
                **_mutated(k["RS256"]),
                "n": public_jwk(rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key())[
                    "n"
                ],
            },
            "2048",
            id="rsa-1024",
        ),
        pytest.param(lambda k: "not an object", "not an object", id="entry-not-object"),
    ],
)
def test_load_jwks_refuses_unfit_keys(make: Any, message: str, signing_keys: dict[str, SigningKey]) -> None:
    with pytest.raises(ValueError, match=message):
        load_jwks({"keys": [make(signing_keys)]})


@pytest.mark.parametrize("data", [{}, {"keys": []}, {"keys": "nope"}, {"keys": {"a": 1}}])
def test_load_jwks_refuses_a_malformed_set(data: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="keys"):
        load_jwks(data)


def test_load_jwks_refuses_duplicate_kids(signing_keys: dict[str, SigningKey]) -> None:
    a = _mutated(signing_keys["ES256"], kid="same")
    b = _mutated(signing_keys["EdDSA"], kid="same")
    with pytest.raises(ValueError, match="duplicate kid"):
        load_jwks({"keys": [a, b]})


def test_load_jwks_file(signing_keys: dict[str, SigningKey], tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(KeySet(signing_keys["ES256"]).jwks()), encoding="utf-8")
    assert list(load_jwks_file(path)) == [signing_keys["ES256"].kid]
    path.write_text("[]", encoding="utf-8")
    with pytest.raises(ValueError, match="JSON object"):
        load_jwks_file(path)


def test_ed25519_private_key_object_is_kept_not_re_serialised(signing_keys: dict[str, SigningKey]) -> None:
    # SPEC §4: keys are parsed once; the signer hands PyJWT this very object on every call.
    key = signing_keys["EdDSA"]
    assert isinstance(key.private_key, Ed25519PrivateKey)
