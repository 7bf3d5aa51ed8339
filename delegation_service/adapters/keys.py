"""Signing keys, key sets and trusted issuers' JWKS, parsed once at start-up (SPEC §4).

Every key is turned into a ``cryptography`` key object here, once (PyJWT's JWK parsers read the
trusted issuers' JWKS); signing and verification then use those objects directly, never a PEM string
that would be parsed again on every call.

A key's ``kid`` is its RFC 7638 JWK thumbprint, so the same key always has the same id wherever it is
loaded, and a JWKS can never hold two different keys under one id.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal, Protocol, TypeGuard, cast, get_args

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt.algorithms import get_default_algorithms
from jwt.exceptions import PyJWTError

from delegation_service.domain.encoding import b64url_encode

SigningAlgorithm = Literal["ES256", "EdDSA", "RS256"]
"""The algorithms this service signs with: ES256 or EdDSA by default, RS256 because RFC 9068 needs it."""

SIGNING_ALGORITHMS: tuple[str, ...] = get_args(SigningAlgorithm)
"""The same, as names in that order (settings, command-line choices and errors list them so)."""

ASYMMETRIC_ALGORITHMS: frozenset[str] = frozenset(
    {"ES256", "ES384", "ES512", "EdDSA", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
)
"""Every algorithm a verification key may be bound to. No ``none``, no HMAC: a public key must never be
usable as a shared secret (the classic algorithm-confusion attack)."""
DEFAULT_UPSTREAM_ALGORITHMS: tuple[str, ...] = ("ES256", "EdDSA", "RS256", "PS256", "ES384")
"""What a trusted issuer may sign with unless its configuration narrows or widens it."""

PRIVATE_JWK_MEMBERS: frozenset[str] = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
"""JWK members that carry secret material (RFC 7518 §6.2.2, §6.3.2, §6.4.1; RFC 8037 §2)."""

MIN_RSA_BITS = 2048

PrivateKey = ec.EllipticCurvePrivateKey | Ed25519PrivateKey | rsa.RSAPrivateKey
"""The private key types this service can sign with."""

PublicKey = ec.EllipticCurvePublicKey | Ed25519PublicKey | Ed448PublicKey | rsa.RSAPublicKey
"""The public key types this service can verify with."""

_CURVE_NAMES: Mapping[str, str] = MappingProxyType(
    {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
)
_EC_ALGORITHM_CURVES: Mapping[str, str] = MappingProxyType(
    {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
)
_CURVE_ALGORITHMS: Mapping[str, str] = MappingProxyType({v: k for k, v in _EC_ALGORITHM_CURVES.items()})
# RFC 7638 §3.2: the required members of each key type, the only ones the thumbprint hashes.
_THUMBPRINT_MEMBERS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x"), "RSA": ("e", "kty", "n")}
)


def _uint(value: int) -> str:
    """A positive integer as RFC 7518 §2 Base64urlUInt: big-endian, minimal length."""
    return b64url_encode(value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def public_jwk(public_key: PublicKey) -> dict[str, str]:
    """The key-type members of ``public_key``'s JWK (``kty``, ``crv``, ``x``, ``y``, ``n``, ``e``).

    Built from the public key alone, so it cannot carry a private member whatever key it came from.
    """
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        crv = _CURVE_NAMES.get(public_key.curve.name)
        if crv is None:
            raise ValueError("unsupported elliptic curve")
        # RFC 7518 §6.2.1.2: coordinates are the full curve size, leading zeros kept.
        size = (public_key.curve.key_size + 7) // 8
        numbers = public_key.public_numbers()
        return {
            "kty": "EC",
            "crv": crv,
            "x": b64url_encode(numbers.x.to_bytes(size, "big")),
            "y": b64url_encode(numbers.y.to_bytes(size, "big")),
        }
    if isinstance(public_key, Ed25519PublicKey | Ed448PublicKey):
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        crv = "Ed25519" if isinstance(public_key, Ed25519PublicKey) else "Ed448"
        return {"kty": "OKP", "crv": crv, "x": b64url_encode(raw)}
    if isinstance(public_key, rsa.RSAPublicKey):
        numbers_rsa = public_key.public_numbers()
        return {"kty": "RSA", "n": _uint(numbers_rsa.n), "e": _uint(numbers_rsa.e)}
    raise ValueError("unsupported key type")


def jwk_thumbprint(public_key: PublicKey) -> str:
    """The RFC 7638 thumbprint of ``public_key``: base64url SHA-256 of its canonical required members."""
    jwk = public_jwk(public_key)
    canonical = {name: jwk[name] for name in _THUMBPRINT_MEMBERS[jwk["kty"]]}
    encoded = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return b64url_encode(hashlib.sha256(encoded.encode("ascii")).digest())


def check_key_fits_algorithm(public_key: PublicKey, alg: str) -> None:
    """Raise ``ValueError`` unless ``public_key`` is the kind of key ``alg`` needs, strong enough.

    Binding each key to one algorithm up front means a token's header can never pick how a key is used.
    """
    if alg not in ASYMMETRIC_ALGORITHMS:
        raise ValueError(f"algorithm {alg!r} is not an allowed asymmetric algorithm")
    if alg in _EC_ALGORITHM_CURVES:
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise ValueError(f"{alg} needs an elliptic-curve key")
        if _CURVE_NAMES.get(public_key.curve.name) != _EC_ALGORITHM_CURVES[alg]:
            raise ValueError(f"{alg} needs a key on curve {_EC_ALGORITHM_CURVES[alg]}")
    elif alg == "EdDSA":
        if not isinstance(public_key, Ed25519PublicKey | Ed448PublicKey):
            raise ValueError("EdDSA needs an Ed25519 or Ed448 key")
    else:
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise ValueError(f"{alg} needs an RSA key")
        if public_key.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA keys must have at least {MIN_RSA_BITS} bits")


def _is_signing_algorithm(alg: str) -> TypeGuard[SigningAlgorithm]:
    return alg in SIGNING_ALGORITHMS


def _check_no_private_members(jwk: Mapping[str, object]) -> None:
    # Not an assert: ``python -O`` strips asserts, and leaking a private key is not a debug concern.
    if PRIVATE_JWK_MEMBERS & jwk.keys():
        raise ValueError("a JWK with private members must never be published or trusted")


@dataclass(frozen=True)
class VerificationKey:
    """A public key bound to the algorithms it may verify, as used to verify signatures.

    ``alg`` is the key's own algorithm; ``algorithms`` is the set a token's header may name, which is
    ``{alg}`` unless the key came from a JWK without ``alg`` (:func:`algorithms_for`).
    """

    kid: str
    alg: str
    key: PublicKey = field(repr=False, compare=False)
    thumbprint: str
    algorithms: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.algorithms:
            object.__setattr__(self, "algorithms", frozenset({self.alg}))
        elif self.alg not in self.algorithms:
            raise ValueError("a key's own algorithm must be one of those it may verify")


class KeySource(Protocol):
    """Where the verifier finds an issuer's keys by kid: a fixed set, or a remote JWKS kept fresh."""

    def key(self, kid: str) -> VerificationKey | None:
        """The usable key with id ``kid``, or ``None``; may wait (bounded) for a refresh it triggers."""
        ...

    @property
    def generation(self) -> int:
        """Changes whenever the set of keys changes (caches of verified tokens start over then)."""
        ...


class StaticKeys:
    """A key set fixed at start-up (a JWKS file, the dev issuer, our own keys)."""

    def __init__(self, keys: Mapping[str, VerificationKey]) -> None:
        self._keys: Mapping[str, VerificationKey] = MappingProxyType(dict(keys))

    def key(self, kid: str) -> VerificationKey | None:
        """The key with id ``kid``, if the set holds it."""
        return self._keys.get(kid)

    @property
    def generation(self) -> int:
        """Always 0: the set never changes."""
        return 0

    @property
    def keys(self) -> Mapping[str, VerificationKey]:
        """Every key, by kid."""
        return self._keys


@dataclass(frozen=True)
class SigningKey:
    """A private signing key, parsed once, with its ``kid`` (RFC 7638 thumbprint) and public JWK.

    Construct it from a key object and an algorithm; ``kid`` and ``public_jwk`` are derived, so they can
    never disagree with the key. Two ``SigningKey`` objects are equal when their kid and alg are.
    """

    kid: str = field(init=False)
    alg: SigningAlgorithm
    private_key: PrivateKey = field(repr=False, compare=False)
    public_jwk: Mapping[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _is_signing_algorithm(self.alg):
            raise ValueError(f"cannot sign with {self.alg!r}; use one of {sorted(SIGNING_ALGORITHMS)}")
        if not isinstance(self.private_key, PrivateKey):
            raise ValueError("not a supported private key object")
        public_key = cast(PublicKey, self.private_key.public_key())
        check_key_fits_algorithm(public_key, self.alg)
        if self.alg == "EdDSA" and not isinstance(public_key, Ed25519PublicKey):
            raise ValueError("EdDSA signing keys must be Ed25519")
        kid = jwk_thumbprint(public_key)
        jwk = {**public_jwk(public_key), "kid": kid, "alg": self.alg, "use": "sig"}
        _check_no_private_members(jwk)
        object.__setattr__(self, "kid", kid)
        object.__setattr__(self, "public_jwk", MappingProxyType(jwk))

    @property
    def public_key(self) -> PublicKey:
        """The public half of the key."""
        return cast(PublicKey, self.private_key.public_key())

    def verification_key(self) -> VerificationKey:
        """The public half, bound to this key's algorithm, for verifying what this key signed."""
        return VerificationKey(kid=self.kid, alg=self.alg, key=self.public_key, thumbprint=self.kid)


def load_signing_key(pem_bytes: bytes, alg: str, password: bytes | None = None) -> SigningKey:
    """Parse a PEM (PKCS#8 or traditional) private key for ``alg``; raise ``ValueError`` if unfit.

    The error never repeats any of the key material.
    """
    if not _is_signing_algorithm(alg):
        raise ValueError(f"cannot sign with {alg!r}; use one of {sorted(SIGNING_ALGORITHMS)}")
    try:
        key = serialization.load_pem_private_key(pem_bytes, password=password)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError("not a readable PEM private key (wrong format or password)") from None
    if not isinstance(key, PrivateKey):
        raise ValueError("the PEM holds a key type this service cannot sign with")
    return SigningKey(alg=alg, private_key=key)


def load_private_key_file(path: str | Path, alg: str, password: bytes | None = None) -> SigningKey:
    """Read and parse a PEM private key file (see :func:`load_signing_key`)."""
    return load_signing_key(Path(path).read_bytes(), alg, password)


def generate_signing_key(alg: str = "ES256") -> SigningKey:
    """A fresh, in-memory key: for the dev server and tests, never persisted anywhere."""
    if not _is_signing_algorithm(alg):
        raise ValueError(f"cannot sign with {alg!r}; use one of {sorted(SIGNING_ALGORITHMS)}")
    private_key: PrivateKey
    if alg == "ES256":
        private_key = ec.generate_private_key(ec.SECP256R1())
    elif alg == "EdDSA":
        private_key = Ed25519PrivateKey.generate()
    else:
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    return SigningKey(alg=alg, private_key=private_key)


class KeyRole(enum.Enum):
    """The part a key plays in a :class:`KeySet`."""

    ACTIVE = "active"
    """Signs new tokens (exactly one)."""
    NEXT = "next"
    """Published in the JWKS, verifies, but does not sign yet: relying parties learn it before the
    rotation makes it active, so no token ever carries a kid their cached JWKS lacks."""
    PREVIOUS = "previous"
    """Signed earlier; kept to verify (and published) until every token it signed has expired."""


class KeySet:
    """This service's signing keys: exactly one active (it signs), next ones published ahead of use,
    previous ones kept to verify (rotation with overlap).

    Rotation: publish the new key as *next* (it appears in the JWKS), wait for relying parties' JWKS
    caches to refresh, then ``rotate(new_key)`` (it signs; the old active key becomes *previous*), and
    drop the previous key once the longest child lifetime has passed.
    """

    def __init__(
        self,
        active: SigningKey,
        previous: Iterable[SigningKey] = (),
        next_keys: Iterable[SigningKey] = (),
    ) -> None:
        previous = tuple(previous)
        upcoming = tuple(next_keys)
        ordered = [active, *upcoming, *previous]
        kids = [key.kid for key in ordered]
        if len(set(kids)) != len(kids):
            raise ValueError("a key set cannot hold the same key twice")
        self._roles: tuple[tuple[SigningKey, KeyRole], ...] = (
            (active, KeyRole.ACTIVE),
            *((key, KeyRole.NEXT) for key in upcoming),
            *((key, KeyRole.PREVIOUS) for key in previous),
        )
        self._keys: tuple[SigningKey, ...] = tuple(ordered)
        self._by_kid: Mapping[str, SigningKey] = MappingProxyType({key.kid: key for key in ordered})
        self._verification_keys: Mapping[str, VerificationKey] = MappingProxyType(
            {key.kid: key.verification_key() for key in ordered}
        )

    @property
    def active(self) -> SigningKey:
        """The key that signs new tokens."""
        return self._keys[0]

    @property
    def keys(self) -> tuple[SigningKey, ...]:
        """Every key, the active one first, then the next ones, then the previous ones."""
        return self._keys

    def roles(self) -> tuple[tuple[SigningKey, KeyRole], ...]:
        """Every key with its role, in the order of :attr:`keys`."""
        return self._roles

    @property
    def next_keys(self) -> tuple[SigningKey, ...]:
        """The keys published ahead of their use."""
        return tuple(key for key, role in self._roles if role is KeyRole.NEXT)

    @property
    def previous_keys(self) -> tuple[SigningKey, ...]:
        """The keys kept to verify what they signed before the last rotation."""
        return tuple(key for key, role in self._roles if role is KeyRole.PREVIOUS)

    def get(self, kid: str) -> SigningKey | None:
        """The key with id ``kid``, if the set holds it."""
        return self._by_kid.get(kid)

    def rotate(self, new_active: SigningKey, keep_previous: int | None = None) -> KeySet:
        """A new set where ``new_active`` signs and the current keys stay for verification.

        ``keep_previous`` caps how many older keys are kept (newest first); ``None`` keeps them all.
        """
        older = [self.active, *self.previous_keys]
        older = [key for key in older if key.kid != new_active.kid]
        if keep_previous is not None:
            older = older[:keep_previous]
        return KeySet(new_active, older, [k for k in self.next_keys if k.kid != new_active.kid])

    def verification_keys(self) -> Mapping[str, VerificationKey]:
        """Every key's public half by kid: tokens signed by any key of the set verify."""
        return self._verification_keys

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The public JWK Set, active key first; a fresh copy each call, with no private member ever."""
        keys = [dict(key.public_jwk) for key in self._keys]
        for jwk in keys:
            _check_no_private_members(jwk)
        return {"keys": keys}


def algorithms_for(jwk: Mapping[str, object], allowed: Sequence[str]) -> tuple[str, ...]:
    """The algorithms of ``allowed`` (in its order) that a JWK without ``alg`` may verify, by key type.

    An RSA key: the RS* and PS* families; an EC key: its curve's one algorithm; an OKP key: EdDSA. Never
    ``none`` and never HMAC (``allowed`` holds asymmetric algorithms only, and a public key is no secret).
    Many providers publish RSA keys without ``alg``; the issuer's configured list then decides whether
    PS256 tokens verify with them, instead of a guess that would refuse them.
    """
    kty = jwk.get("kty")
    crv = jwk.get("crv")
    if kty == "EC" and isinstance(crv, str) and crv in _CURVE_ALGORITHMS:
        fitting: frozenset[str] = frozenset({_CURVE_ALGORITHMS[crv]})
    elif kty == "OKP" and crv in ("Ed25519", "Ed448"):
        fitting = frozenset({"EdDSA"})
    elif kty == "RSA":
        fitting = frozenset(a for a in ASYMMETRIC_ALGORITHMS if a[:2] in ("RS", "PS"))
    else:
        fitting = frozenset()
    return tuple(a for a in dict.fromkeys(allowed) if a in fitting and a in ASYMMETRIC_ALGORITHMS)


def parse_public_jwk(
    jwk: Mapping[str, object], allowed: Sequence[str] = DEFAULT_UPSTREAM_ALGORITHMS
) -> VerificationKey:
    """Parse one trusted public JWK into a key object bound to its algorithms; ``ValueError`` if unfit.

    A key that states ``alg`` is bound to it alone; one that does not may verify every algorithm of
    ``allowed`` (the issuer's list) that fits its type (:func:`algorithms_for`).
    """
    _check_no_private_members(jwk)
    kty = jwk.get("kty")
    if kty not in _THUMBPRINT_MEMBERS:
        raise ValueError("only EC, OKP and RSA public keys are accepted")
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise ValueError("the key is not for signatures (use)")
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        raise ValueError("the key is not for verification (key_ops)")
    declared = jwk.get("alg")
    if declared is not None and not isinstance(declared, str):
        raise ValueError("alg must be a string")
    if declared is not None:
        if declared not in ASYMMETRIC_ALGORITHMS:
            raise ValueError(f"algorithm {declared!r} is not an allowed asymmetric algorithm")
        algorithms: tuple[str, ...] = (declared,)
    else:
        algorithms = algorithms_for(jwk, allowed)
        if not algorithms:
            raise ValueError("the key states no alg and none of the issuer's algorithms fits its kty/crv")
    alg = algorithms[0]
    try:
        parsed = get_default_algorithms()[alg].from_jwk(dict(jwk))
    except (PyJWTError, ValueError, TypeError, KeyError, UnsupportedAlgorithm):
        raise ValueError("the key members do not form a valid public key") from None
    if not isinstance(parsed, PublicKey):
        raise ValueError("the key is not a public key")
    for each in algorithms:
        check_key_fits_algorithm(parsed, each)
    thumbprint = jwk_thumbprint(parsed)
    kid = jwk.get("kid", thumbprint)
    if not isinstance(kid, str) or not kid:
        raise ValueError("kid must be a non-empty string")
    return VerificationKey(
        kid=kid, alg=alg, key=parsed, thumbprint=thumbprint, algorithms=frozenset(algorithms)
    )


def load_jwks(
    data: Mapping[str, object], algorithms: Sequence[str] = DEFAULT_UPSTREAM_ALGORITHMS
) -> dict[str, VerificationKey]:
    """Parse a trusted issuer's JWK Set once, at start-up: ``{kid: key bound to its algorithms}``.

    ``algorithms`` is the issuer's allow-list; it decides what a key without ``alg`` may verify.

    Refuses (``ValueError``) any private member, symmetric key, unknown algorithm, weak key or duplicate
    ``kid``. Keys without a ``kid`` get their RFC 7638 thumbprint.
    """
    entries = data.get("keys")
    if not isinstance(entries, list) or not entries:
        raise ValueError('a JWKS needs a non-empty "keys" list')
    keys: dict[str, VerificationKey] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"JWKS key #{index} is not an object")
        try:
            key = parse_public_jwk(cast(Mapping[str, object], entry), algorithms)
        except ValueError as exc:
            raise ValueError(f"JWKS key #{index}: {exc}") from None
        if key.kid in keys:
            raise ValueError(f"JWKS key #{index}: duplicate kid")
        keys[key.kid] = key
    return keys


def load_remote_jwks(data: Mapping[str, object], algorithms: Sequence[str]) -> dict[str, VerificationKey]:
    """Parse an identity provider's published JWK Set: ``{kid: key}`` of the keys we may verify with.

    Unlike a configured file, a provider's set also holds keys that are not ours to use (Keycloak lists
    its ``RSA-OAEP`` encryption key beside the signing ones; a provider may add an algorithm we do not
    allow): those are skipped, not fatal. A kid listed twice is dropped (which key would it name?), and
    any private member refuses the whole set: such a provider is broken. ``ValueError`` when no usable
    key remains.
    """
    entries = data.get("keys")
    if not isinstance(entries, list) or not entries:
        raise ValueError('a JWKS needs a non-empty "keys" list')
    allowed = frozenset(algorithms)
    keys: dict[str, VerificationKey] = {}
    duplicated: set[str] = set()
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        _check_no_private_members(entry)
        try:
            key = parse_public_jwk(cast(Mapping[str, object], entry), algorithms)
        except ValueError:
            continue
        if key.alg not in allowed:
            continue
        if key.kid in keys:
            duplicated.add(key.kid)
        keys[key.kid] = key
    for kid in duplicated:
        del keys[kid]
    if not keys:
        raise ValueError("the JWKS holds no usable signing key")
    return keys


def load_jwks_file(
    path: str | Path, algorithms: Sequence[str] = DEFAULT_UPSTREAM_ALGORITHMS
) -> dict[str, VerificationKey]:
    """Read a JWKS JSON file and parse it with :func:`load_jwks` (``algorithms``: the issuer's list)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("a JWKS file must hold a JSON object")
    return load_jwks(data, algorithms)


def distinct_keys(ours: Sequence[VerificationKey], theirs: Sequence[VerificationKey]) -> bool:
    """Whether no key appears (by thumbprint) in both sequences."""
    return not {key.thumbprint for key in ours} & {key.thumbprint for key in theirs}
