"""JwtSigner and JwtVerifier: round trips, interoperability, rotation, and hostile input (SPEC §3.1, §4).

Tokens for hostile cases are forged by hand (see :class:`World`), not with the adapter under test, so a
case can carry any header, duplicate JSON members or a wrong signature.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc import jwt as joserfc_jwt
from joserfc.jwk import KeySet as JoseKeySet
from jwt import algorithms as pyjwt_algorithms
from jwt.algorithms import get_default_algorithms

from delegation_service.adapters.jwt_codec import IssuerRules, JwtSigner, JwtVerifier, TrustedIssuer
from delegation_service.adapters.keys import (
    ASYMMETRIC_ALGORITHMS,
    KeySet,
    SigningKey,
    VerificationKey,
    generate_signing_key,
    jwk_thumbprint,
    load_jwks,
)
from delegation_service.adapters.signatures import low_s
from delegation_service.adapters.upstream_dev import DevUpstreamIssuer
from delegation_service.domain.errors import ParentRejected
from delegation_service.domain.scopes import Bearer, BearerType, parse_scope
from delegation_service.domain.tokens import (
    ChildToken,
    TokenKind,
    VerifiedToken,
    root_chain_id,
    token_fingerprint,
)

NOW = 1_800_000_000
LEEWAY = 30
OWN = "https://delegation.example"
UPSTREAM = "https://issuer.example"
AUD_ISSUER = "https://aud-issuer.example"
REQUIRED_AUDIENCE = "delegation-service"
DROP = object()
"""A claim or header value meaning: leave this member out."""


class FixedClock:
    """A clock that says what it is told."""

    def __init__(self, now: int = NOW) -> None:
        self.value = now

    def now(self) -> int:
        return self.value


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jdump(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _merge(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for name, value in changes.items():
        if value is DROP:
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged


@dataclass
class World:
    """Keys, a signer and a verifier, and a token forge that bypasses the adapter under test."""

    own: dict[str, SigningKey]
    upstream_es: SigningKey
    upstream_rs: SigningKey
    aud_key: SigningKey
    attacker: SigningKey

    @property
    def own_keys(self) -> KeySet:
        return KeySet(self.own["ES256"])

    def verifier(self, own_keys: KeySet | None = None, **kwargs: Any) -> JwtVerifier:
        trusted = [
            TrustedIssuer(
                UPSTREAM,
                load_jwks({"keys": [dict(self.upstream_es.public_jwk), dict(self.upstream_rs.public_jwk)]}),
            ),
            TrustedIssuer(
                AUD_ISSUER,
                load_jwks({"keys": [dict(self.aud_key.public_jwk)]}),
                IssuerRules(audience=REQUIRED_AUDIENCE),
            ),
        ]
        kwargs.setdefault("clock", FixedClock())
        return JwtVerifier(OWN, own_keys or self.own_keys, trusted, LEEWAY, **kwargs)

    def child(self, **changes: Any) -> ChildToken:
        base = ChildToken(
            token_id="child-1",
            chain_id="chain-1",
            parent_token_id="up-1",
            issuer=OWN,
            subject="user-1",
            audiences=("search-api",),
            client_id="search-api",
            actor_client_id="gateway",
            scopes=(parse_scope("search.index.r"), parse_scope("https://api.example/uitpas")),
            bearer=Bearer(BearerType.PERSON, "user-1"),
            issued_at=NOW - 5,
            expires_at=NOW + 300,
        )
        return replace(base, **changes)

    def upstream_claims(self, **changes: Any) -> dict[str, Any]:
        base = {
            "iss": UPSTREAM,
            "sub": "user-1",
            "client_id": "gateway",
            "scope": "directory.delegations.rw search.index.rw",
            "iat": NOW - 10,
            "nbf": NOW - 10,
            "exp": NOW + 600,
            "jti": "up-1",
        }
        return _merge(base, changes)

    def forge(
        self,
        claims: Mapping[str, Any] | None = None,
        *,
        key: SigningKey | None = None,
        header: Mapping[str, Any] | None = None,
        raw_header: bytes | None = None,
        raw_payload: bytes | None = None,
    ) -> str:
        """A compact JWS with exactly the given bytes, signed by ``key`` (upstream ES256 by default)."""
        key = key or self.upstream_es
        full_header = _merge({"alg": key.alg, "typ": "at+jwt", "kid": key.kid}, header or {})
        header_bytes = raw_header if raw_header is not None else jdump(full_header)
        payload_bytes = (
            raw_payload
            if raw_payload is not None
            else jdump(self.upstream_claims() if claims is None else claims)
        )
        signing_input = f"{b64(header_bytes)}.{b64(payload_bytes)}"
        signature = get_default_algorithms()[key.alg].sign(signing_input.encode(), key.private_key)
        if isinstance(key.private_key, ec.EllipticCurvePrivateKey):
            signature = low_s(signature, key.private_key.curve)
        return f"{signing_input}.{b64(signature)}"

    def forge_own(self, claims_changes: Mapping[str, Any] | None = None, **kwargs: Any) -> str:
        """A child-shaped token signed by our own active key, with changed claims or header."""
        return self.forge(
            _merge(self.child().claims(), claims_changes or {}), key=self.own["ES256"], **kwargs
        )

    def forge_hmac(self, claims: Mapping[str, Any], secret: bytes, kid: str) -> str:
        signing_input = f"{b64(jdump({'alg': 'HS256', 'typ': 'at+jwt', 'kid': kid}))}.{b64(jdump(claims))}"
        signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{b64(signature)}"


@pytest.fixture(scope="module")
def world() -> World:
    return World(
        own={alg: generate_signing_key(alg) for alg in ("ES256", "EdDSA", "RS256")},
        upstream_es=generate_signing_key("ES256"),
        upstream_rs=generate_signing_key("RS256"),
        aud_key=generate_signing_key("EdDSA"),
        attacker=generate_signing_key("ES256"),
    )


@pytest.fixture(scope="module")
def verifier(world: World) -> JwtVerifier:
    return world.verifier()


# --- signing and round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "RS256"])
def test_sign_then_verify_round_trip(alg: str, world: World) -> None:
    keys = KeySet(world.own[alg])
    child = world.child()
    token = JwtSigner(keys).sign(child)
    verified = world.verifier(keys).verify(token)
    assert verified == VerifiedToken(
        kind=TokenKind.DELEGATED,
        token_id=child.token_id,
        chain_id=child.chain_id,
        issuer=OWN,
        subject=child.subject,
        client_id=child.client_id,
        audiences=child.audiences,
        scopes=("search.index.r", "https://api.example/uitpas"),
        bearer=child.bearer,
        issued_at=child.issued_at,
        expires_at=child.expires_at,
        parent_token_id=child.parent_token_id,
        actor_client_id=child.actor_client_id,
    )


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "RS256"])
def test_signed_header_is_rfc9068_with_the_active_kid(alg: str, world: World) -> None:
    keys = KeySet(world.own[alg], [world.own[a] for a in world.own if a != alg])
    token = JwtSigner(keys).sign(world.child())
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"typ": "at+jwt", "kid": world.own[alg].kid, "alg": alg}


def test_organisation_bearer_without_id_and_several_audiences_round_trip(world: World) -> None:
    child = world.child(bearer=Bearer(BearerType.ORGANIZATION), audiences=("a-api", "b-api"))
    verified = world.verifier().verify(JwtSigner(world.own_keys).sign(child))
    assert verified.bearer == Bearer(BearerType.ORGANIZATION)
    assert verified.audiences == ("a-api", "b-api")


@pytest.mark.parametrize("alg", ["ES256", "RS256", "EdDSA"])
def test_child_token_verifies_with_joserfc_against_the_published_jwks(
    alg: str, world: World, recwarn: pytest.WarningsRecorder
) -> None:
    # An independent implementation must accept what we sign, with only the published JWKS.
    keys = KeySet(world.own[alg], [world.own[a] for a in world.own if a != alg])
    signer = JwtSigner(keys)
    token = signer.sign(world.child())
    jose_keys = JoseKeySet.import_key_set(json.loads(json.dumps(signer.jwks())))
    # joserfc flags "EdDSA" as superseded by RFC 9864's "Ed25519"; the warning is expected here.
    decoded = joserfc_jwt.decode(token, jose_keys, algorithms=[alg])
    assert decoded.header["typ"] == "at+jwt"
    assert decoded.header["kid"] == world.own[alg].kid
    registry = joserfc_jwt.JWTClaimsRegistry(
        now=NOW,
        iss={"essential": True, "value": OWN},
        aud={"essential": True, "value": "search-api"},
        sub={"essential": True, "value": "user-1"},
        jti={"essential": True},
        exp={"essential": True},
    )
    registry.validate(decoded.claims)
    assert decoded.claims["scope"] == "search.index.r https://api.example/uitpas"
    assert all(w.category.__name__ == "SecurityWarning" for w in recwarn)


def test_rotation_keeps_tokens_of_the_previous_key_valid(world: World) -> None:
    old_keys = KeySet(world.own["ES256"])
    old_token = JwtSigner(old_keys).sign(world.child(token_id="old"))
    fresh = generate_signing_key("ES256")
    new_keys = old_keys.rotate(fresh)
    new_token = JwtSigner(new_keys).sign(world.child(token_id="new"))
    verifier = world.verifier(new_keys)
    assert verifier.verify(old_token).token_id == "old"
    assert verifier.verify(new_token).token_id == "new"
    assert [k["kid"] for k in new_keys.jwks()["keys"]] == [fresh.kid, world.own["ES256"].kid]
    # Once the old key leaves the set, its tokens stop verifying.
    with pytest.raises(ParentRejected) as raised:
        world.verifier(KeySet(fresh)).verify(old_token)
    assert raised.value.detail == "unknown kid"


def test_rotation_to_another_algorithm_keeps_old_tokens_valid(world: World) -> None:
    old_keys = KeySet(world.own["RS256"])
    old_token = JwtSigner(old_keys).sign(world.child(token_id="old"))
    new_keys = old_keys.rotate(world.own["EdDSA"])
    assert world.verifier(new_keys).verify(old_token).token_id == "old"
    # Dropped: the retired algorithm is no longer accepted at all.
    with pytest.raises(ParentRejected):
        world.verifier(KeySet(world.own["EdDSA"])).verify(old_token)


def test_keys_are_never_parsed_per_call(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # SPEC §4: key objects are parsed once. If PEM text were used per call, these loaders would run.
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a key was parsed per call")

    for loader in ("load_pem_private_key", "load_pem_public_key", "load_ssh_public_key"):
        monkeypatch.setattr(pyjwt_algorithms, loader, refuse)
        monkeypatch.setattr(serialization, loader, refuse)
    for alg in ("ES256", "EdDSA", "RS256"):
        keys = KeySet(world.own[alg])
        assert world.verifier(keys).verify(JwtSigner(keys).sign(world.child())).kind is TokenKind.DELEGATED
    assert world.verifier().verify(world.forge()).kind is TokenKind.UPSTREAM


# --- every algorithm, against an independent signer ---------------------------------------------------

_PRIVATE_KEYS: dict[str, Callable[[], Any]] = {
    "ES256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "ES384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "ES512": lambda: ec.generate_private_key(ec.SECP521R1()),
    "EdDSA": ed25519.Ed25519PrivateKey.generate,
    "EdDSA-Ed448": ed448.Ed448PrivateKey.generate,
    **{
        alg: lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
        for alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
    },
}


@pytest.fixture(scope="module")
def private_keys() -> dict[str, Any]:
    return {name: make() for name, make in _PRIVATE_KEYS.items()}


def _upstream_world(name: str, private_keys: dict[str, Any]) -> tuple[str, Any, JwtVerifier]:
    alg = name.split("-", maxsplit=1)[0]
    private_key = private_keys[name]
    public = private_key.public_key()
    kid = jwk_thumbprint(public)
    key = VerificationKey(kid=kid, alg=alg, key=public, thumbprint=kid)
    verifier = JwtVerifier(
        OWN,
        KeySet(generate_signing_key("ES256")),
        [TrustedIssuer(UPSTREAM, {kid: key}, IssuerRules(algorithms=(alg,)))],
        LEEWAY,
        clock=FixedClock(),
    )
    return alg, private_key, verifier


def _pyjwt_token(alg: str, private_key: Any, kid: str, claims: Mapping[str, Any]) -> str:
    # PyJWT as the independent signer: ES* raw r || s, PS* with a salt as long as the hash, RFC 8037.
    signing_input = f"{b64(jdump({'alg': alg, 'kid': kid, 'typ': 'JWT'}))}.{b64(jdump(claims))}"
    signature = get_default_algorithms()[alg].sign(signing_input.encode(), private_key)
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        signature = low_s(signature, private_key.curve)  # PyJWT returns either twin; we accept low-S
    return f"{signing_input}.{b64(signature)}"


def test_every_allowed_algorithm_is_covered() -> None:
    assert {name.split("-")[0] for name in _PRIVATE_KEYS} == ASYMMETRIC_ALGORITHMS


@pytest.mark.parametrize("name", sorted(_PRIVATE_KEYS))
def test_every_algorithm_verifies_what_pyjwt_signs_and_nothing_else(
    name: str, world: World, private_keys: dict[str, Any]
) -> None:
    alg, private_key, verifier = _upstream_world(name, private_keys)
    kid = jwk_thumbprint(private_key.public_key())
    token = _pyjwt_token(alg, private_key, kid, world.upstream_claims())
    verified = verifier.verify(token)
    assert (verified.kind, verified.token_id, verified.subject) == (TokenKind.UPSTREAM, "up-1", "user-1")
    # Any change to the signing input or the signature breaks it.
    tampered = _pyjwt_token(alg, private_key, kid, world.upstream_claims(sub="user-2"))
    swapped = ".".join([*tampered.split(".")[:2], token.split(".")[2]])
    for bad in (swapped, _flip_signature_bit(token)):
        with pytest.raises(ParentRejected) as raised:
            verifier.verify(bad)
        assert raised.value.detail == "bad signature"


@pytest.mark.parametrize("alg", ["PS256", "PS384", "PS512"])
def test_pss_needs_the_salt_length_rfc7518_fixes(
    alg: str, world: World, private_keys: dict[str, Any]
) -> None:
    _, private_key, verifier = _upstream_world(alg, private_keys)
    kid = jwk_thumbprint(private_key.public_key())
    signing_input = f"{b64(jdump({'alg': alg, 'kid': kid}))}.{b64(jdump(world.upstream_claims()))}"
    hash_algorithm = {"PS256": hashes.SHA256(), "PS384": hashes.SHA384(), "PS512": hashes.SHA512()}[alg]
    pss = padding.PSS(mgf=padding.MGF1(hash_algorithm), salt_length=hash_algorithm.digest_size + 1)
    signature = private_key.sign(signing_input.encode(), pss, hash_algorithm)
    with pytest.raises(ParentRejected) as raised:
        verifier.verify(f"{signing_input}.{b64(signature)}")
    assert raised.value.detail == "bad signature"


def test_signer_output_verifies_with_pyjwt(world: World) -> None:
    # Our signer bypasses PyJWT; PyJWT, as an independent verifier, must accept what it signs.
    for alg in ("ES256", "EdDSA", "RS256"):
        key = world.own[alg]
        token = JwtSigner(KeySet(key)).sign(world.child())
        head, payload, signature = token.split(".")
        signature_bytes = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
        algorithm = get_default_algorithms()[alg]
        assert algorithm.verify(f"{head}.{payload}".encode(), key.public_key, signature_bytes)


# --- upstream tokens ---------------------------------------------------------------------------------


def test_upstream_token_maps_to_a_chain_root(world: World, verifier: JwtVerifier) -> None:
    token = world.forge(world.upstream_claims(bearer={"type": "Org", "id": "org-7"}))
    verified = verifier.verify(token)
    assert verified.kind is TokenKind.UPSTREAM
    assert verified.token_id == "up-1"
    assert verified.chain_id == root_chain_id(UPSTREAM, "up-1")
    assert verified.issuer == UPSTREAM
    assert verified.client_id == "gateway"
    assert verified.scopes == ("directory.delegations.rw", "search.index.rw")
    assert verified.bearer == Bearer(BearerType.ORGANIZATION, "org-7")
    assert verified.issued_at == NOW - 10
    assert verified.expires_at == NOW + 600
    assert verified.parent_token_id is None
    assert verified.actor_client_id is None


def test_upstream_token_without_jti_is_identified_by_header_and_payload_only(
    world: World, verifier: JwtVerifier
) -> None:
    token = world.forge(world.upstream_claims(jti=DROP))
    signing_input = token.rsplit(".", 1)[0]
    verified = verifier.verify(token)
    assert verified.token_id == token_fingerprint(signing_input)
    assert verified.chain_id == root_chain_id(UPSTREAM, token_fingerprint(signing_input))


# The order n of P-256 (SEC 2 §2.4.2), written out here rather than taken from the code under test.
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _twin(token: str) -> str:
    """The same ES256 token with the other signature that verifies: (r, n - s) for (r, s)."""
    signing_input, signature_segment = token.rsplit(".", 1)
    signature = base64.urlsafe_b64decode(signature_segment + "=" * (-len(signature_segment) % 4))
    s = int.from_bytes(signature[32:], "big")
    return f"{signing_input}.{b64(signature[:32] + (P256_ORDER - s).to_bytes(32, 'big'))}"


def test_a_high_s_twin_of_an_upstream_token_is_refused(world: World, verifier: JwtVerifier) -> None:
    token = world.forge(world.upstream_claims(jti=DROP))
    assert verifier.verify(token)
    with pytest.raises(ParentRejected) as refused:
        verifier.verify(_twin(token))
    assert refused.value.detail == "bad signature"


def test_a_high_s_twin_of_our_own_token_is_refused(world: World, verifier: JwtVerifier) -> None:
    token = JwtSigner(world.own_keys).sign(world.child())
    assert verifier.verify(token).token_id == "child-1"
    with pytest.raises(ParentRejected):
        verifier.verify(_twin(token))


def test_an_issuer_allowed_high_s_gives_both_twins_one_identity(world: World) -> None:
    """Every encoding that verifies has the same identity, so a twin can never dodge a revocation."""
    trusted = TrustedIssuer(
        UPSTREAM, load_jwks({"keys": [dict(world.upstream_es.public_jwk)]}), IssuerRules(allow_high_s=True)
    )
    verifier = JwtVerifier(OWN, world.own_keys, [trusted], LEEWAY, clock=FixedClock())
    token = world.forge(world.upstream_claims(jti=DROP))
    twin = _twin(token)
    assert twin != token
    assert verifier.verify(twin).token_id == verifier.verify(token).token_id
    assert verifier.verify(twin).chain_id == verifier.verify(token).chain_id


@settings(max_examples=64, deadline=None)
@given(st.binary(max_size=64))
def test_our_ecdsa_signatures_are_always_low_s(world: World, payload: bytes) -> None:
    del payload  # each example signs afresh: ECDSA draws a new nonce, so a new (r, s), every time
    token = JwtSigner(world.own_keys).sign(world.child())
    signature_segment = token.rsplit(".", 1)[1]
    signature = base64.urlsafe_b64decode(signature_segment + "=" * (-len(signature_segment) % 4))
    assert int.from_bytes(signature[32:], "big") <= P256_ORDER // 2


@pytest.mark.parametrize(
    ("claims", "actor_claim", "expected"),
    [
        ({"client_id": "gateway", "azp": "portal", "cid": "x"}, "cid", "gateway"),
        ({"client_id": DROP, "azp": "portal", "cid": "x"}, "cid", "portal"),
        ({"client_id": DROP, "cid": "x"}, "cid", "x"),
        ({"client_id": DROP, "cid": "x"}, None, ""),
        ({"client_id": DROP}, "cid", ""),
    ],
)
def test_the_acting_client_is_client_id_else_azp_else_the_issuers_claim(
    world: World, claims: dict[str, Any], actor_claim: str | None, expected: str
) -> None:
    trusted = TrustedIssuer(
        UPSTREAM,
        load_jwks({"keys": [dict(world.upstream_es.public_jwk)]}),
        IssuerRules(actor_claim=actor_claim),
    )
    verifier = JwtVerifier(OWN, world.own_keys, [trusted], LEEWAY, clock=FixedClock())
    assert verifier.verify(world.forge(world.upstream_claims(**claims))).client_id == expected


def test_upstream_defaults_azp_scp_and_person_bearer(world: World, verifier: JwtVerifier) -> None:
    claims = world.upstream_claims(
        client_id=DROP, azp="portal", scope=DROP, scp=["a.bcd.r", "a.bcd.r", "x.yz_.rw"]
    )
    verified = verifier.verify(world.forge(claims, key=world.upstream_rs))
    assert verified.client_id == "portal"
    assert verified.scopes == ("a.bcd.r", "x.yz_.rw")
    assert verified.bearer == Bearer(BearerType.PERSON, "user-1")


def test_upstream_without_client_or_scopes(world: World, verifier: JwtVerifier) -> None:
    verified = verifier.verify(world.forge(world.upstream_claims(client_id=DROP, scope=DROP)))
    assert verified.client_id == ""
    assert verified.scopes == ()


@pytest.mark.parametrize("typ", [DROP, "JWT", "jwt", "at+jwt", "application/at+jwt"])
def test_upstream_access_token_types_are_accepted(typ: object, world: World, verifier: JwtVerifier) -> None:
    assert verifier.verify(world.forge(header={"typ": typ})).kind is TokenKind.UPSTREAM


@pytest.mark.parametrize("aud", [REQUIRED_AUDIENCE, [REQUIRED_AUDIENCE]])
def test_required_audience_is_accepted(aud: object, world: World, verifier: JwtVerifier) -> None:
    token = world.forge(world.upstream_claims(iss=AUD_ISSUER, aud=aud), key=world.aud_key)
    assert REQUIRED_AUDIENCE in verifier.verify(token).audiences


def test_extra_audiences_are_refused_unless_the_issuer_allows_them(world: World) -> None:
    """A token addressed to another service as well could be replayed to us by that service."""
    token = world.forge(
        world.upstream_claims(iss=AUD_ISSUER, aud=["other", REQUIRED_AUDIENCE]), key=world.aud_key
    )
    keys = load_jwks({"keys": [dict(world.aud_key.public_jwk)]})

    def verifier(allow: bool) -> JwtVerifier:
        trusted = TrustedIssuer(
            AUD_ISSUER, keys, IssuerRules(audience=REQUIRED_AUDIENCE, allow_extra_audiences=allow)
        )
        return JwtVerifier(OWN, world.own_keys, [trusted], LEEWAY, clock=FixedClock())

    with pytest.raises(ParentRejected) as refused:
        verifier(False).verify(token)
    assert refused.value.detail == "token is addressed to other audiences too"
    assert verifier(True).verify(token).audiences == ("other", REQUIRED_AUDIENCE)


@pytest.mark.parametrize(
    ("changes", "accepted"),
    [
        ({"exp": NOW - LEEWAY + 1, "iat": NOW - 100}, True),
        ({"exp": NOW - LEEWAY, "iat": NOW - 100}, False),
        ({"nbf": NOW + LEEWAY}, True),
        ({"nbf": NOW + LEEWAY + 1}, False),
        ({"iat": NOW + LEEWAY, "nbf": DROP}, True),
        ({"iat": NOW + LEEWAY + 1, "nbf": DROP}, False),
    ],
)
def test_time_checks_allow_exactly_the_leeway(
    changes: dict[str, Any], accepted: bool, world: World, verifier: JwtVerifier
) -> None:
    token = world.forge(world.upstream_claims(**changes))
    if accepted:
        verifier.verify(token)
    else:
        with pytest.raises(ParentRejected):
            verifier.verify(token)


def test_dev_upstream_issuer_mints_tokens_the_verifier_accepts(world: World) -> None:
    clock = FixedClock()
    dev = DevUpstreamIssuer(clock=clock)
    verifier = JwtVerifier(OWN, world.own_keys, [dev.trusted_issuer()], LEEWAY, clock=clock)
    token = dev.mint("alice", ["directory.delegations.rw", "search.index.r"], "gateway", lifetime_seconds=60)
    verified = verifier.verify(token)
    assert verified.kind is TokenKind.UPSTREAM
    assert verified.issuer == dev.issuer
    assert verified.subject == "alice"
    assert verified.bearer == Bearer(BearerType.PERSON, "alice")
    assert verified.expires_at == NOW + 60
    assert not {"d"} & dev.jwks()["keys"][0].keys()
    org = dev.mint("bob", ["search.index.r"], "gateway", bearer=Bearer(BearerType.ORGANIZATION, "org-1"))
    assert verifier.verify(org).bearer == Bearer(BearerType.ORGANIZATION, "org-1")
    clock.value = NOW + 60 + LEEWAY
    with pytest.raises(ParentRejected):
        verifier.verify(token)


# --- construction ------------------------------------------------------------------------------------


def test_own_issuer_can_never_be_a_trusted_upstream(world: World) -> None:
    upstream = TrustedIssuer(OWN, load_jwks({"keys": [dict(world.upstream_es.public_jwk)]}))
    with pytest.raises(ValueError, match="ours"):
        JwtVerifier(OWN, world.own_keys, [upstream], LEEWAY)


def test_a_trusted_issuer_listing_our_key_is_refused(world: World) -> None:
    # Even under another kid: the thumbprint gives the key away.
    jwk = {**world.own["EdDSA"].public_jwk, "kid": "innocent"}
    upstream = TrustedIssuer(UPSTREAM, load_jwks({"keys": [jwk]}))
    own_keys = KeySet(world.own["ES256"], [world.own["EdDSA"]])
    with pytest.raises(ValueError, match="own signing keys"):
        JwtVerifier(OWN, own_keys, [upstream], LEEWAY)


def test_duplicate_trusted_issuers_are_refused(world: World) -> None:
    issuer = TrustedIssuer(UPSTREAM, load_jwks({"keys": [dict(world.upstream_es.public_jwk)]}))
    with pytest.raises(ValueError, match="twice"):
        JwtVerifier(OWN, world.own_keys, [issuer, issuer], LEEWAY)


@pytest.mark.parametrize("algorithms", [["HS256"], ["none"], ["ES256", "HS512"], []])
def test_trusted_issuer_allows_only_asymmetric_algorithms(algorithms: list[str], world: World) -> None:
    with pytest.raises(ValueError, match="asymmetric"):
        TrustedIssuer(
            UPSTREAM,
            load_jwks({"keys": [dict(world.upstream_es.public_jwk)]}),
            IssuerRules(algorithms=algorithms),
        )


@pytest.mark.parametrize("kwargs", [{"leeway_seconds": -1}, {"max_token_bytes": 0}, {"own_issuer": ""}])
def test_verifier_refuses_nonsense_configuration(kwargs: dict[str, Any], world: World) -> None:
    arguments: dict[str, Any] = {
        "own_issuer": OWN,
        "own_keys": world.own_keys,
        "trusted": [],
        "leeway_seconds": 5,
    }
    with pytest.raises(ValueError):  # noqa: PT011 - one message per setting
        JwtVerifier(**(arguments | kwargs))


# --- hostile input -----------------------------------------------------------------------------------


def _flip_signature_bit(token: str) -> str:
    head, payload, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw[len(raw) // 2] ^= 0x01
    return f"{head}.{payload}.{b64(bytes(raw))}"


def _non_canonical_signature(world: World) -> str:
    # Same signature bytes, another spelling: without a jti, each spelling would be another token id.
    token = world.forge()
    head, payload, signature = token.split(".")
    assert len(signature) % 4 != 0  # a 64-byte ES256 signature leaves stray low bits in its last character
    decoded = base64.urlsafe_b64decode(signature + "==")
    for char in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_":
        spelled = signature[:-1] + char
        if spelled != signature and base64.urlsafe_b64decode(spelled + "==") == decoded:
            return f"{head}.{payload}.{spelled}"
    raise AssertionError("no alternative spelling found")


def _der_signature(world: World) -> str:
    # The DER form of a valid ECDSA signature (what cryptography returns) is not JOSE's raw r || s.
    head, payload, _ = world.forge().split(".")
    der = world.upstream_es.private_key.sign(  # type: ignore[call-arg]
        f"{head}.{payload}".encode(),
        ec.ECDSA(hashes.SHA256()),  # type: ignore[arg-type]
    )
    return f"{head}.{payload}.{b64(der)}"


def _truncated_signature(world: World) -> str:
    head, payload, signature = world.forge().split(".")
    return f"{head}.{payload}.{b64(base64.urlsafe_b64decode(signature + '==')[:-1])}"


def _non_canonical_payload(world: World) -> str:
    # Same decoded bytes, different spelling: set low bits that base64 decoding silently drops.
    claims = world.upstream_claims()
    while len(jdump(claims)) % 3 == 0:
        claims["pad"] = claims.get("pad", "") + "x"
    token = world.forge(claims)
    head, payload, signature = token.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for char in alphabet:
        spelled = payload[:-1] + char
        if spelled != payload and base64.urlsafe_b64decode(spelled + "==") == base64.urlsafe_b64decode(
            payload + "=="
        ):
            return f"{head}.{spelled}.{signature}"
    raise AssertionError("no alternative spelling found")


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"a": [value]}
    return value


def _public_pem(key: SigningKey) -> bytes:
    return key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


Case = Callable[[World], Any]

HOSTILE: list[Any] = [
    # --- algorithm ---
    pytest.param(
        lambda w: w.forge(header={"alg": "none"}).rsplit(".", 1)[0] + ".",
        "unsigned token",
        id="alg-none-unsigned",
    ),
    pytest.param(lambda w: w.forge(header={"alg": "none"}), "algorithm not allowed", id="alg-none"),
    pytest.param(lambda w: w.forge(header={"alg": "None"}), "algorithm not allowed", id="alg-None"),
    pytest.param(lambda w: w.forge(header={"alg": "NONE"}), "algorithm not allowed", id="alg-NONE"),
    pytest.param(lambda w: w.forge(header={"alg": DROP}), "algorithm not allowed", id="alg-missing"),
    pytest.param(lambda w: w.forge(header={"alg": ["ES256"]}), "algorithm not allowed", id="alg-list"),
    pytest.param(lambda w: w.forge(header={"alg": "es256"}), "algorithm not allowed", id="alg-lowercase"),
    pytest.param(
        lambda w: w.forge_hmac(w.child().claims(), _public_pem(w.own["ES256"]), w.own["ES256"].kid),
        "algorithm not allowed",
        id="hs256-with-our-public-pem",
    ),
    pytest.param(
        lambda w: w.forge_hmac(w.upstream_claims(), _public_pem(w.upstream_es), w.upstream_es.kid),
        "algorithm not allowed",
        id="hs256-with-upstream-public-pem",
    ),
    pytest.param(
        lambda w: w.forge_hmac(
            w.upstream_claims(), json.dumps(dict(w.upstream_es.public_jwk)).encode(), w.upstream_es.kid
        ),
        "algorithm not allowed",
        id="hs256-with-upstream-jwk",
    ),
    pytest.param(
        lambda w: w.forge(header={"alg": "RS256", "kid": w.upstream_es.kid}, key=w.upstream_rs),
        "algorithm does not match the key",
        id="alg-rs256-on-ec-key",
    ),
    pytest.param(
        lambda w: w.forge(header={"alg": "ES384"}),
        "algorithm does not match the key",
        id="alg-es384-on-p256-key",
    ),
    pytest.param(
        lambda w: w.forge(header={"alg": "PS256"}, key=w.upstream_rs),
        "algorithm does not match the key",
        id="alg-ps256-on-rs256-key",
    ),
    pytest.param(
        lambda w: w.forge(
            w.upstream_claims(iss=AUD_ISSUER, aud=REQUIRED_AUDIENCE), key=w.aud_key, header={"alg": "ES256"}
        ),
        "algorithm does not match the key",
        id="alg-es256-on-eddsa-key",
    ),
    # --- keys and key-bearing headers ---
    pytest.param(lambda w: w.forge(header={"kid": "no-such-kid"}), "unknown kid", id="unknown-kid"),
    pytest.param(lambda w: w.forge(header={"kid": DROP}), "missing kid", id="missing-kid"),
    pytest.param(lambda w: w.forge(header={"kid": 7}), "missing kid", id="kid-not-string"),
    pytest.param(lambda w: w.forge(key=w.attacker), "unknown kid", id="attacker-key-own-kid"),
    pytest.param(
        lambda w: w.forge(key=w.attacker, header={"kid": w.upstream_es.kid}),
        "bad signature",
        id="attacker-key-real-kid",
    ),
    pytest.param(
        lambda w: w.forge(header={"jku": "https://evil.example/jwks.json"}),
        "forbidden header",
        id="jku-header",
    ),
    pytest.param(
        lambda w: w.forge(header={"x5u": "https://evil.example/cert.pem"}),
        "forbidden header",
        id="x5u-header",
    ),
    pytest.param(
        lambda w: w.forge(key=w.attacker, header={"jwk": dict(w.attacker.public_jwk)}),
        "forbidden header",
        id="jwk-header",
    ),
    pytest.param(lambda w: w.forge(header={"x5c": ["MIIBIjANBgkq"]}), "forbidden header", id="x5c-header"),
    pytest.param(
        lambda w: w.forge(header={"crit": ["exp"], "exp": NOW}), "forbidden header", id="crit-header"
    ),
    pytest.param(
        lambda w: w.forge(header={"crit": ["b64"], "b64": False}), "forbidden header", id="crit-b64"
    ),
    pytest.param(lambda w: w.forge(header={"b64": True}), "forbidden header", id="b64-header"),
    pytest.param(
        lambda w: w.forge(w.upstream_claims(), key=w.own["ES256"]),
        "unknown kid",
        id="upstream-iss-signed-by-our-key",
    ),
    pytest.param(lambda w: w.forge(w.child().claims()), "unknown kid", id="own-iss-signed-by-upstream-key"),
    # --- signature and encoding ---
    pytest.param(lambda w: _flip_signature_bit(w.forge()), "bad signature", id="bit-flipped-signature"),
    pytest.param(lambda w: w.forge().rsplit(".", 1)[0] + ".", "unsigned token", id="stripped-signature"),
    pytest.param(lambda w: w.forge() + "AA", "bad signature", id="signature-with-extra-bytes"),
    pytest.param(lambda w: w.forge()[:-1] + "=", "bad signature", id="signature-with-padding-char"),
    pytest.param(_non_canonical_signature, "bad signature", id="non-canonical-signature"),
    pytest.param(_der_signature, "bad signature", id="ecdsa-signature-in-der"),
    pytest.param(_truncated_signature, "bad signature", id="signature-one-byte-short"),
    pytest.param(lambda w: w.forge().rsplit(".", 1)[0] + ".AA!A", "bad signature", id="signature-not-b64"),
    pytest.param(lambda w: w.forge().rsplit(".", 1)[0] + ".A", "bad signature", id="signature-length-1"),
    pytest.param(lambda w: w.forge().rsplit(".", 1)[0], "three segments", id="two-segments"),
    pytest.param(lambda w: w.forge() + ".e30", "three segments", id="four-segments"),
    pytest.param(lambda w: "eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d", "three segments", id="jwe-five-segments"),
    pytest.param(lambda w: "", "three segments", id="empty"),
    pytest.param(lambda w: "..", "unsigned token", id="empty-segments"),
    pytest.param(lambda w: w.forge().replace(".", ".!!", 1), "not base64url", id="bad-base64"),
    pytest.param(lambda w: "e30=.e30.c2ln", "not base64url", id="padded-base64"),
    pytest.param(lambda w: "e3+.e30.c2ln", "not base64url", id="standard-alphabet-base64"),
    pytest.param(lambda w: b64(b'{"alg":') + ".e30.c2ln", "not JSON", id="truncated-header"),
    pytest.param(lambda w: "A.e30.c2ln", "not base64url", id="impossible-base64-length"),
    pytest.param(_non_canonical_payload, "non-canonical", id="non-canonical-base64"),
    pytest.param(lambda w: w.forge() + "é", "not ASCII", id="non-ascii"),
    pytest.param(lambda w: None, "not a string", id="none-input"),
    pytest.param(lambda w: w.forge().encode(), "not a string", id="bytes-input"),
    pytest.param(lambda w: w.forge(w.upstream_claims(pad="x" * 16384)), "too large", id="oversized"),
    # --- JSON ---
    pytest.param(
        lambda w: w.forge(
            raw_payload=b'{"iss":"https://issuer.example","sub":"a","sub":"b","iat":1799999990,"exp":1800000600}'
        ),
        "duplicate JSON member",
        id="duplicate-payload-member",
    ),
    pytest.param(
        lambda w: w.forge(raw_payload=jdump(w.upstream_claims())[:-1] + b',"iss":"https://evil.example"}'),
        "duplicate JSON member",
        id="duplicate-iss",
    ),
    pytest.param(
        lambda w: w.forge(raw_header=f'{{"alg":"none","alg":"ES256","kid":"{w.upstream_es.kid}"}}'.encode()),
        "duplicate JSON member",
        id="duplicate-header-member",
    ),
    pytest.param(
        lambda w: w.forge(w.upstream_claims(act=_nested(40))), "nested too deeply", id="nested-claims"
    ),
    pytest.param(
        lambda w: w.forge(raw_payload=b"[" * 3000 + b"]" * 3000),
        "nested too deeply",
        id="nested-beyond-recursion-limit",
    ),
    pytest.param(lambda w: w.forge(raw_payload=b"[1,2]"), "not a JSON object", id="payload-array"),
    pytest.param(lambda w: w.forge(raw_payload=b'"text"'), "not a JSON object", id="payload-string"),
    pytest.param(lambda w: w.forge(raw_header=b"null"), "not a JSON object", id="header-null"),
    pytest.param(
        lambda w: w.forge(raw_payload=jdump(w.upstream_claims())[:-1] + b',"x":NaN}'),
        "constant",
        id="payload-nan",
    ),
    pytest.param(
        lambda w: w.forge(raw_payload=jdump(w.upstream_claims()).replace(b"user-1", b"us\xe9r")),
        "not UTF-8",
        id="latin-1",
    ),
    pytest.param(
        lambda w: w.forge(raw_payload=json.dumps(w.upstream_claims()).encode("utf-16")),
        "not UTF-8",
        id="utf-16",
    ),
    pytest.param(lambda w: w.forge(raw_payload=b"{,}"), "not JSON", id="payload-not-json"),
    # --- times ---
    pytest.param(lambda w: w.forge(w.upstream_claims(exp=NOW - 3600)), "expired", id="expired"),
    pytest.param(lambda w: w.forge(w.upstream_claims(nbf=NOW + 3600)), "nbf", id="nbf-in-future"),
    pytest.param(
        lambda w: w.forge(w.upstream_claims(iat=NOW + 3600, nbf=DROP, exp=NOW + 7200)),
        "(iat)",
        id="iat-in-future",
    ),
    pytest.param(lambda w: w.forge(w.upstream_claims(exp=str(NOW + 600))), "exp is not", id="exp-string"),
    pytest.param(
        lambda w: w.forge(w.upstream_claims(exp=f"{NOW + 600}.0")), "exp is not", id="exp-float-as-string"
    ),
    pytest.param(lambda w: w.forge(w.upstream_claims(exp=float(NOW + 600))), "exp is not", id="exp-float"),
    pytest.param(lambda w: w.forge(w.upstream_claims(exp=True)), "exp is not", id="exp-bool"),
    pytest.param(lambda w: w.forge(w.upstream_claims(exp=None)), "exp is not", id="exp-null"),
    pytest.param(lambda w: w.forge(w.upstream_claims(exp=10**30)), "exp is not", id="exp-huge"),
    pytest.param(lambda w: w.forge(w.upstream_claims(exp=-1)), "exp is not", id="exp-negative"),
    pytest.param(lambda w: w.forge(w.upstream_claims(iat=False)), "iat is not", id="iat-bool"),
    pytest.param(lambda w: w.forge(w.upstream_claims(nbf="0")), "nbf is not", id="nbf-string"),
    pytest.param(lambda w: w.forge(w.upstream_claims(exp=DROP)), "missing exp", id="missing-exp"),
    pytest.param(lambda w: w.forge(w.upstream_claims(iat=DROP)), "missing exp or iat", id="missing-iat"),
    pytest.param(
        lambda w: w.forge(w.upstream_claims(iat=NOW, exp=NOW)), "expires before", id="exp-equals-iat"
    ),
    # --- issuer, subject, audience ---
    pytest.param(lambda w: w.forge(w.upstream_claims(iss=DROP)), "missing iss", id="missing-iss"),
    pytest.param(lambda w: w.forge(w.upstream_claims(iss=[UPSTREAM])), "missing iss", id="iss-list"),
    pytest.param(
        lambda w: w.forge(w.upstream_claims(iss=UPSTREAM + ".evil")),
        "untrusted issuer",
        id="iss-prefix-trick",
    ),
    pytest.param(
        lambda w: w.forge(w.upstream_claims(iss="https://issuer.exampl")),
        "untrusted issuer",
        id="iss-truncated",
    ),
    pytest.param(
        lambda w: w.forge(w.upstream_claims(iss=UPSTREAM + "/")), "untrusted issuer", id="iss-trailing-slash"
    ),
    pytest.param(
        lambda w: w.forge(w.upstream_claims(iss=UPSTREAM.upper())), "untrusted issuer", id="iss-case"
    ),
    pytest.param(
        lambda w: w.forge(w.upstream_claims(iss=UPSTREAM + " ")), "untrusted issuer", id="iss-space"
    ),
    pytest.param(
        lambda w: w.forge(w.upstream_claims(iss="https://evil.example"), key=w.attacker),
        "untrusted issuer",
        id="untrusted-issuer",
    ),
    pytest.param(lambda w: w.forge(w.upstream_claims(sub=DROP)), "missing sub", id="missing-sub"),
    pytest.param(lambda w: w.forge(w.upstream_claims(sub="")), "malformed sub", id="empty-sub"),
    pytest.param(lambda w: w.forge(w.upstream_claims(sub=42)), "malformed sub", id="sub-number"),
    pytest.param(
        lambda w: w.forge(w.upstream_claims(sub="a\nlevel=admin")), "malformed sub", id="sub-newline"
    ),
    pytest.param(
        lambda w: w.forge(w.upstream_claims(sub="\ud800")), "malformed sub", id="sub-lone-surrogate"
    ),
    pytest.param(
        lambda w: w.forge(w.upstream_claims(iss=AUD_ISSUER, aud="other"), key=w.aud_key),
        "audience mismatch",
        id="wrong-aud",
    ),
    pytest.param(
        lambda w: w.forge(w.upstream_claims(iss=AUD_ISSUER, aud=[REQUIRED_AUDIENCE + "x"]), key=w.aud_key),
        "audience mismatch",
        id="aud-suffix-trick",
    ),
    pytest.param(
        lambda w: w.forge(w.upstream_claims(iss=AUD_ISSUER), key=w.aud_key),
        "audience mismatch",
        id="missing-aud",
    ),
    pytest.param(lambda w: w.forge(w.upstream_claims(aud=[1])), "malformed aud", id="aud-number"),
    pytest.param(lambda w: w.forge(w.upstream_claims(aud={"a": 1})), "malformed aud", id="aud-object"),
    # --- other claims ---
    pytest.param(lambda w: w.forge(w.upstream_claims(jti="")), "malformed jti", id="empty-jti"),
    pytest.param(
        lambda w: w.forge(w.upstream_claims(client_id=5)), "malformed client_id", id="client-id-number"
    ),
    pytest.param(lambda w: w.forge(w.upstream_claims(scope=["a.bcd.r"])), "malformed scope", id="scope-list"),
    pytest.param(
        lambda w: w.forge(w.upstream_claims(scope=DROP, scp="a.bcd.r")), "malformed scp", id="scp-string"
    ),
    pytest.param(lambda w: w.forge(w.upstream_claims(bearer="Per")), "malformed bearer", id="bearer-string"),
    pytest.param(
        lambda w: w.forge(w.upstream_claims(bearer={"type": "Adm"})), "bearer type", id="bearer-type"
    ),
    pytest.param(
        lambda w: w.forge(w.upstream_claims(bearer={"type": "Org", "id": 3})), "bearer id", id="bearer-id"
    ),
    pytest.param(lambda w: w.forge(header={"typ": "dpop+jwt"}), "(typ)", id="upstream-dpop-typ"),
    pytest.param(lambda w: w.forge(header={"typ": "logout+jwt"}), "(typ)", id="upstream-logout-typ"),
    pytest.param(lambda w: w.forge(header={"typ": 1}), "malformed typ", id="typ-number"),
    # --- our own (delegated) tokens ---
    pytest.param(lambda w: w.forge_own(header={"typ": "JWT"}), "typ at+jwt", id="child-typ-jwt"),
    pytest.param(lambda w: w.forge_own(header={"typ": DROP}), "typ at+jwt", id="child-typ-missing"),
    pytest.param(
        lambda w: w.forge_own(header={"typ": "application/at+jwt"}), "typ at+jwt", id="child-typ-long-form"
    ),
    pytest.param(
        lambda w: w.forge_own({"parent_jti": DROP}), "missing parent_jti", id="child-without-parent"
    ),
    pytest.param(lambda w: w.forge_own({"chain_id": DROP}), "missing chain_id", id="child-without-chain"),
    pytest.param(lambda w: w.forge_own({"jti": DROP}), "missing jti", id="child-without-jti"),
    pytest.param(lambda w: w.forge_own({"client_id": DROP}), "missing client_id", id="child-without-client"),
    pytest.param(lambda w: w.forge_own({"act": DROP}), "without act", id="child-without-act"),
    pytest.param(lambda w: w.forge_own({"act": {"sub": ""}}), "malformed sub", id="child-act-empty"),
    pytest.param(lambda w: w.forge_own({"bearer": DROP}), "without bearer", id="child-without-bearer"),
    pytest.param(lambda w: w.forge_own({"scope": DROP}), "without scope", id="child-without-scope"),
    pytest.param(lambda w: w.forge_own({"exp": NOW - 3600}), "expired", id="child-expired"),
]


@pytest.mark.parametrize(("make", "detail"), HOSTILE)
def test_hostile_input_is_rejected(make: Case, detail: str, world: World, verifier: JwtVerifier) -> None:
    raw = make(world)
    with pytest.raises(ParentRejected) as raised:
        verifier.verify(raw)
    assert detail in raised.value.detail
    # The log detail and the message never carry the token, nor any part of it.
    assert raised.value.message == "the parent token is not valid"
    if isinstance(raw, str) and raw:
        for segment in raw.split("."):
            if len(segment) > 8:
                assert segment not in raised.value.detail


def test_hostile_table_is_large_enough() -> None:
    assert len(HOSTILE) >= 25


# --- property: nothing but ParentRejected, whatever the input ---------------------------------------

_B64URL_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _segment(value: Any) -> str:
    return b64(json.dumps(value).encode())


def _token_shaped(world: World) -> st.SearchStrategy[str]:
    kids = [world.upstream_es.kid, world.own["ES256"].kid, world.aud_key.kid, "x"]
    header = st.fixed_dictionaries(
        {},
        optional={
            "alg": st.sampled_from(["ES256", "EdDSA", "RS256", "PS256", "none", "HS256"]) | _json_values,
            "kid": st.sampled_from(kids) | _json_values,
            "typ": st.sampled_from(["at+jwt", "JWT"]) | _json_values,
            "crit": _json_values,
        },
    )
    payload = st.fixed_dictionaries(
        {},
        optional={
            "iss": st.sampled_from([OWN, UPSTREAM, AUD_ISSUER]) | _json_values,
            "sub": _json_values,
            "exp": st.integers(NOW - 100, NOW + 100) | _json_values,
            "iat": st.integers(NOW - 100, NOW + 100) | _json_values,
            "nbf": _json_values,
            "aud": _json_values,
            "scope": _json_values,
            "scp": _json_values,
            "bearer": _json_values,
            "act": _json_values,
            "jti": _json_values,
        },
    )
    signature = st.binary(max_size=512).map(b64)
    return st.builds(
        lambda h, p, s: f"{_segment(h)}.{_segment(p)}.{s}",
        header | _json_values,
        payload | _json_values,
        signature,
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_verify_only_ever_raises_parent_rejected(
    data: st.DataObject, world: World, verifier: JwtVerifier
) -> None:
    valid = world.forge()
    mutated = st.builds(
        lambda i, c: valid[:i] + c + valid[i + 1 :],
        st.integers(0, len(valid) - 1),
        st.sampled_from(_B64URL_CHARS + ".=!é"),
    )
    raw = data.draw(
        st.text(max_size=400)
        | st.text(alphabet=_B64URL_CHARS + ".", max_size=400)
        | _token_shaped(world)
        | mutated
    )
    # Success is possible (an unchanged mutation); any exception other than ParentRejected fails.
    with contextlib.suppress(ParentRejected):
        assert isinstance(verifier.verify(raw), VerifiedToken)
