"""JWT adapters: :class:`JwtSigner` (``TokenSigner``) and :class:`JwtVerifier` (``TokenVerifier``).

The verifier treats every input as hostile (RFC 8725). It reads nothing it has not bounded first, parses
both JSON segments itself (refusing duplicate members, so what it checks is exactly what was signed),
lets the token choose nothing: the unverified ``iss`` selects an issuer by exact string equality, the
``kid`` selects a key *of that issuer only*, and the key, not the header, fixes the algorithm. The
signature is then checked with ``cryptography`` directly, on the signing input, with the key object parsed
at start-up and a check function bound to the key's one algorithm (:func:`signature_check`): the segments
are decoded and parsed once, here, never a second time by a JWT library. The claims are checked here too,
with the injected clock, so every time rule is testable and applied the same way to upstream and own
tokens.

Signing is equally direct: the header segment of each key is built once, and a child costs one JSON
encoding, one base64url encoding and one signature (ES256: the raw ``r || s`` of RFC 7518 §3.4).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NoReturn, TypeGuard

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from delegation_service.adapters.clock import SystemClock
from delegation_service.adapters.keys import (
    ASYMMETRIC_ALGORITHMS,
    DEFAULT_UPSTREAM_ALGORITHMS,
    KeySet,
    KeySource,
    PrivateKey,
    SigningKey,
    VerificationKey,
    distinct_keys,
)
from delegation_service.domain.binding import JKT, X5T_S256, Confirmation, is_thumbprint
from delegation_service.domain.errors import ParentRejected
from delegation_service.domain.ports import Clock
from delegation_service.domain.scopes import Bearer, BearerType
from delegation_service.domain.tokens import (
    ChildToken,
    TokenKind,
    VerifiedToken,
    root_chain_id,
    token_fingerprint,
)

ACCESS_TOKEN_TYP = "at+jwt"
"""RFC 9068 §2.1: the ``typ`` of a JWT access token."""

"""What a trusted issuer may sign with unless configured otherwise: asymmetric algorithms only."""

FORBIDDEN_HEADERS: frozenset[str] = frozenset({"jku", "x5u", "jwk", "x5c", "crit", "b64"})
"""Headers that would let a token name its own key (``jku``, ``x5u``, ``jwk``, ``x5c``), demand
extensions we do not implement (``crit``) or change what is signed (``b64``, RFC 7797). Never followed:
a token carrying one is refused outright."""

# Upstream tokens may be untyped or typed as a (access) JWT; any other explicit type (ID token,
# logout token, DPoP proof, SET...) is another kind of JWT and must not pass for an access token
# (RFC 8725 §3.11). ``typ`` is a media type, hence compared case-insensitively (RFC 7515 §4.1.9).
_UPSTREAM_TYPS = frozenset({"jwt", "application/jwt", "at+jwt", "application/at+jwt"})

MAX_JSON_DEPTH = 16
"""Deepest nesting of objects and arrays a token's JSON may have (RFC 8693 ``act`` may nest)."""

MAX_NUMERIC_DATE = 253_402_300_799
"""9999-12-31T23:59:59Z: larger "times" are garbage, and would overflow stores downstream."""

MAX_IDENTIFIER_LENGTH = 1024

_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")

_JSON_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)

_HASHES: Mapping[str, type[hashes.HashAlgorithm]] = MappingProxyType(
    {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
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


def signature_check(key: VerificationKey, *, allow_high_s: bool = False) -> SignatureCheck:
    """A function that checks signatures made with ``key`` under ``key.alg``, and nothing else.

    An ECDSA signature must be low-S unless ``allow_high_s`` (an upstream issuer that does not normalise).

    Built once per key. Every algorithm of :data:`ASYMMETRIC_ALGORITHMS` is covered; ``alg`` was bound to
    the key (and the key checked to fit it) when the key was loaded.
    """
    alg, public_key = key.alg, key.key
    if alg == "EdDSA":
        if not isinstance(public_key, Ed25519PublicKey | Ed448PublicKey):
            raise ValueError("EdDSA needs an Ed25519 or Ed448 key")
        eddsa_key = public_key

        def check_eddsa(signature: bytes, signing_input: bytes) -> bool:
            try:
                eddsa_key.verify(signature, signing_input)
            except InvalidSignature:
                return False
            return True

        return check_eddsa
    if alg not in ASYMMETRIC_ALGORITHMS:
        raise ValueError(f"algorithm {alg!r} is not an allowed asymmetric algorithm")
    hash_algorithm = _HASHES[alg[2:]]()
    if alg.startswith("ES"):
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise ValueError(f"{alg} needs an elliptic-curve key")
        ec_key = public_key
        size = (public_key.curve.key_size + 7) // 8
        highest_s = _CURVE_ORDERS[public_key.curve.name] // 2 if not allow_high_s else None
        ecdsa = ec.ECDSA(hash_algorithm)

        def check_ecdsa(signature: bytes, signing_input: bytes) -> bool:
            # JOSE carries ECDSA signatures as the raw, fixed-size r || s (RFC 7518 §3.4), not DER.
            if len(signature) != 2 * size:
                return False
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            if highest_s is not None and s > highest_s:
                return False  # the malleable twin of (r, n - s): refused (SPEC §5)
            try:
                ec_key.verify(encode_dss_signature(r, s), signing_input, ecdsa)
            except InvalidSignature:
                return False
            return True

        return check_ecdsa
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise ValueError(f"{alg} needs an RSA key")
    rsa_key = public_key
    rsa_padding: padding.AsymmetricPadding = (
        padding.PKCS1v15()
        if alg.startswith("RS")
        # RFC 7518 §3.5: MGF1 with the same hash, and a salt as long as the hash's output.
        else padding.PSS(mgf=padding.MGF1(hash_algorithm), salt_length=hash_algorithm.digest_size)
    )

    def check_rsa(signature: bytes, signing_input: bytes) -> bool:
        try:
            rsa_key.verify(signature, signing_input, rsa_padding, hash_algorithm)
        except InvalidSignature:
            return False
        return True

    return check_rsa


def _signature_function(key: SigningKey) -> Callable[[bytes], bytes]:
    """``sign(signing_input) -> JOSE signature`` for one of our signing keys."""
    private_key: PrivateKey = key.private_key
    if key.alg == "ES256":
        if not isinstance(private_key, ec.EllipticCurvePrivateKey):
            raise ValueError("ES256 needs an elliptic-curve key")
        ec_key = private_key
        ecdsa = ec.ECDSA(hashes.SHA256())

        def sign_ecdsa(signing_input: bytes) -> bytes:
            r, s = decode_dss_signature(ec_key.sign(signing_input, ecdsa))
            return low_s(r.to_bytes(32, "big") + s.to_bytes(32, "big"), ec_key.curve)

        return sign_ecdsa
    if key.alg == "EdDSA":
        if not isinstance(private_key, Ed25519PrivateKey):
            raise ValueError("EdDSA signing needs an Ed25519 key")
        return private_key.sign
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise ValueError("RS256 needs an RSA key")
    rsa_key = private_key
    pkcs1 = padding.PKCS1v15()
    sha256 = hashes.SHA256()

    def sign_rsa(signing_input: bytes) -> bytes:
        return rsa_key.sign(signing_input, pkcs1, sha256)

    return sign_rsa


def low_s(signature: bytes, curve: ec.EllipticCurve) -> bytes:
    """A JOSE ECDSA signature (``r || s``) in its low-S form, the only one :class:`JwtVerifier` accepts.

    ``cryptography`` (like most libraries) returns either twin at random; an issuer signing for us, or a
    test, normalises with this.
    """
    size = len(signature) // 2
    s = int.from_bytes(signature[size:], "big")
    order = _CURVE_ORDERS[curve.name]
    return signature[:size] + min(s, order - s).to_bytes(size, "big")


def compact_jws(header: Mapping[str, object], payload: bytes, key: SigningKey) -> str:
    """The compact JWS of ``payload`` under ``header``, signed with ``key`` (low-S for ECDSA)."""
    signing_input = _b64url(_JSON_ENCODER.encode(dict(header)).encode("ascii")) + b"." + _b64url(payload)
    return (signing_input + b"." + _b64url(_signature_function(key)(signing_input))).decode("ascii")


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


class JwtSigner:
    """Signs child tokens with the active key of a :class:`KeySet` (RFC 9068 profile, SPEC §4)."""

    def __init__(self, keys: KeySet) -> None:
        self._keys = keys
        active = keys.active
        # The protected header never changes for a key: encode it once (members sorted, as PyJWT did).
        header = {"alg": active.alg, "kid": active.kid, "typ": ACCESS_TOKEN_TYP}
        self._header_segment = _b64url(json.dumps(header, separators=(",", ":"), sort_keys=True).encode())
        self._sign = _signature_function(active)

    @property
    def keys(self) -> KeySet:
        """The key set this signer signs with."""
        return self._keys

    def sign(self, child: ChildToken) -> str:
        """The compact JWS of ``child``'s claims, with ``typ: at+jwt`` and the active ``kid``."""
        payload = _JSON_ENCODER.encode(child.claims()).encode("ascii")
        signing_input = self._header_segment + b"." + _b64url(payload)
        return (signing_input + b"." + _b64url(self._sign(signing_input))).decode("ascii")

    def jwks(self) -> Mapping[str, object]:
        """The public JWK Set of every key in the set (never any private member)."""
        return self._keys.jwks()


@dataclass(frozen=True)
class TrustedIssuer:
    """An upstream issuer whose access tokens may be parents: its exact ``iss``, keys and rules."""

    issuer: str
    keys: Mapping[str, VerificationKey] = field(default_factory=dict, repr=False)
    """A fixed key set (a JWKS file); or, instead, a ``source`` of keys that change (a remote JWKS)."""
    algorithms: Sequence[str] = DEFAULT_UPSTREAM_ALGORITHMS
    audience: str | None = None
    allow_extra_audiences: bool = False
    """With an ``audience``, whether a token may name other audiences besides it. Off by default: a token
    addressed to several services can be replayed to us by any of them (RFC 8725 §3.9)."""
    actor_claim: str | None = None
    """The claim naming the client that holds a token, for an issuer that puts it in neither
    ``client_id`` (RFC 9068) nor ``azp`` (OpenID Connect); it becomes the child's ``act.sub``."""
    allow_high_s: bool = False
    """Accept high-S ECDSA signatures from an issuer whose library does not normalise them. Safe for
    revocation (a token's identity never covers its signature), but off by default (SPEC §5)."""
    source: KeySource | None = field(default=None, repr=False, compare=False)
    """Where the keys are looked up by kid when they change at run time (:mod:`remote_jwks`)."""

    def __post_init__(self) -> None:
        if not self.issuer:
            raise ValueError("a trusted issuer needs a non-empty issuer string")
        if bool(self.keys) == (self.source is not None):
            raise ValueError(f"trusted issuer {self.issuer!r} needs keys or a key source (one of them)")
        algorithms = tuple(self.algorithms)
        refused = set(algorithms) - ASYMMETRIC_ALGORITHMS
        if refused or not algorithms:
            raise ValueError(f"trusted issuer {self.issuer!r}: only asymmetric algorithms may be allowed")
        if self.audience is not None and not self.audience:
            raise ValueError("a required audience must be non-empty")
        if self.actor_claim is not None and not self.actor_claim:
            raise ValueError("an actor claim must be non-empty")
        for kid, key in self.keys.items():
            if kid != key.kid:
                raise ValueError(f"trusted issuer {self.issuer!r}: key map and kid disagree")
        # Frozen: normalise once so nobody can mutate the issuer's rules behind the verifier's back.
        object.__setattr__(self, "algorithms", algorithms)
        object.__setattr__(self, "keys", MappingProxyType(dict(self.keys)))


@dataclass(frozen=True)
class _IssuerRules:
    """What the verifier needs to know about one issuer, resolved at construction."""

    issuer: str
    kind: TokenKind
    keys: Mapping[str, VerificationKey]
    algorithms: frozenset[str]
    audience: str | None
    allow_extra_audiences: bool = False
    actor_claim: str | None = None
    checks: Mapping[str, SignatureCheck] = field(default_factory=dict, repr=False)
    """Each key's signature check, by kid, built once."""
    source: KeySource | None = None
    """Instead of ``keys``: asked for each kid (a remote JWKS, refreshed behind it)."""
    allow_high_s: bool = False
    source_checks: dict[VerificationKey, SignatureCheck] = field(default_factory=dict, repr=False)
    """The signature checks of the source's keys, built once per key object (thumbprint), not per call."""


class JwtVerifier:
    """Verifies upstream parent tokens and this service's own child tokens (SPEC §3 rule 1).

    Every failure, whatever the input, is a :class:`ParentRejected` whose ``detail`` (for the log) is a
    fixed phrase: it never repeats any part of the token.
    """

    def __init__(
        self,
        own_issuer: str,
        own_keys: KeySet,
        trusted: Sequence[TrustedIssuer],
        leeway_seconds: int,
        max_token_bytes: int = 16384,
        *,
        clock: Clock | None = None,
    ) -> None:
        if not own_issuer:
            raise ValueError("own_issuer must be non-empty")
        if leeway_seconds < 0:
            raise ValueError("leeway_seconds must not be negative")
        if max_token_bytes <= 0:
            raise ValueError("max_token_bytes must be positive")
        own_verification_keys = list(own_keys.verification_keys().values())
        rules: dict[str, _IssuerRules] = {
            own_issuer: _IssuerRules(
                issuer=own_issuer,
                kind=TokenKind.DELEGATED,
                keys=own_keys.verification_keys(),
                algorithms=frozenset(key.alg for key in own_verification_keys),
                audience=None,
                checks=_checks(own_keys.verification_keys()),
            )
        }
        for issuer in trusted:
            if issuer.issuer in rules:
                # Our own issuer upstream would let a child pass for a root; a duplicate is ambiguous.
                raise ValueError(f"issuer {issuer.issuer!r} is ours or listed twice")
            if issuer.keys and not distinct_keys(own_verification_keys, list(issuer.keys.values())):
                # A token signed by our key must never verify as an upstream (root) token.
                raise ValueError(f"trusted issuer {issuer.issuer!r} lists one of our own signing keys")
            rules[issuer.issuer] = _IssuerRules(
                issuer=issuer.issuer,
                kind=TokenKind.UPSTREAM,
                keys=issuer.keys,
                algorithms=frozenset(issuer.algorithms),
                audience=issuer.audience,
                allow_extra_audiences=issuer.allow_extra_audiences,
                actor_claim=issuer.actor_claim,
                checks=_checks(issuer.keys, allow_high_s=issuer.allow_high_s),
                source=issuer.source,
                allow_high_s=issuer.allow_high_s,
            )
        self._issuers: Mapping[str, _IssuerRules] = MappingProxyType(rules)
        self._algorithms = frozenset().union(*(r.algorithms for r in rules.values()))
        self._leeway = leeway_seconds
        self._max_token_bytes = max_token_bytes
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._own_thumbprints = frozenset(key.thumbprint for key in own_verification_keys)

    def verify(self, raw_token: str) -> VerifiedToken:
        """Verify signature, algorithm, issuer, audience and times; raise ``ParentRejected`` otherwise."""
        try:
            return self._verify(raw_token)
        except ParentRejected:
            raise
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
            # ``from None``: library messages may quote parts of the token; the type is enough.
            raise ParentRejected(f"malformed token ({type(exc).__name__})") from None
        except Exception as exc:
            # Fail closed: whatever slipped through is a refusal, never an escape or a 500. The type is
            # in the detail so that a bug here still shows in the logs.
            raise ParentRejected(f"unexpected verification error ({type(exc).__name__})") from None

    def _verify(self, raw_token: str) -> VerifiedToken:
        # 1. Bound the work before parsing anything.
        if not isinstance(raw_token, str):
            _reject("token is not a string")
        if len(raw_token) > self._max_token_bytes:
            _reject("token too large")
        if not raw_token.isascii():
            _reject("token is not ASCII")  # so from here on, characters are bytes
        segments = raw_token.split(".")
        if len(segments) != 3:
            _reject("not a compact JWS (three segments)")
        header_segment, payload_segment, signature_segment = segments
        if not signature_segment:
            _reject("unsigned token")
        header = _decode_segment(header_segment, "header")

        # 2. The header may choose nothing dangerous.
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            _reject("algorithm not allowed")
        if FORBIDDEN_HEADERS & header.keys():
            _reject("forbidden header parameter")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            _reject("missing kid")
        typ = header.get("typ")
        if typ is not None and not isinstance(typ, str):
            _reject("malformed typ")

        # 3. The unverified iss selects the issuer (exact equality); the signature proves it below.
        payload = _decode_segment(payload_segment, "payload")
        iss = payload.get("iss")
        if not isinstance(iss, str):
            _reject("missing iss")
        rules = self._issuers.get(iss)
        if rules is None:
            _reject("untrusted issuer")
        if alg not in rules.algorithms:
            _reject("algorithm not allowed for the issuer")
        key, check = self._key(rules, kid)
        if key.alg != alg:
            _reject("algorithm does not match the key")
        if rules.kind is TokenKind.DELEGATED:
            if typ != ACCESS_TOKEN_TYP:
                _reject("own token without typ at+jwt")
        elif typ is not None and typ.lower() not in _UPSTREAM_TYPS:
            _reject("upstream token is not an access token (typ)")

        # 4. Signature, with the key object parsed at start-up and the key's own algorithm only, over the
        # exact bytes received (the segments decoded above are not decoded again).
        signature = _decode_signature(signature_segment)
        signing_input = raw_token[: len(header_segment) + 1 + len(payload_segment)]
        if signature is None or not check(signature, signing_input.encode("ascii")):
            _reject("bad signature")

        # 5. Claims: from the payload parsed above, which is exactly the signed one (no duplicates).
        return self._claims(signing_input, rules, payload)

    def _key(self, rules: _IssuerRules, kid: str) -> tuple[VerificationKey, SignatureCheck]:
        """The issuer's key ``kid`` and its signature check; refused when the issuer has no such key."""
        if rules.source is None:
            key = rules.keys.get(kid)
            if key is None:
                _reject("unknown kid")
            return key, rules.checks[kid]
        key = rules.source.key(kid)
        if key is None:
            _reject("unknown kid")
        if key.thumbprint in self._own_thumbprints:
            # A token signed by our key must never verify as an upstream (root) token.
            _reject("upstream key is one of our own signing keys")
        check = rules.source_checks.get(key)
        if check is None:
            if len(rules.source_checks) > 64:
                rules.source_checks.clear()  # keys rotated out many times over: start afresh
            check = rules.source_checks[key] = signature_check(key, allow_high_s=rules.allow_high_s)
        return key, check

    @property
    def key_generation(self) -> int:
        """Changes whenever a trusted issuer's key set changes (verified-token caches start over)."""
        return sum(r.source.generation for r in self._issuers.values() if r.source is not None)

    def _claims(self, signing_input: str, rules: _IssuerRules, payload: Mapping[str, Any]) -> VerifiedToken:
        now = self._clock.now()
        expires_at = _numeric_date(payload, "exp")
        issued_at = _numeric_date(payload, "iat")
        not_before = _numeric_date(payload, "nbf")
        if expires_at is None or issued_at is None:
            _reject("missing exp or iat")
        if expires_at <= now - self._leeway:
            _reject("token expired")
        if not_before is not None and not_before > now + self._leeway:
            _reject("token not yet valid (nbf)")
        if issued_at > now + self._leeway:
            _reject("token issued in the future (iat)")
        if expires_at <= issued_at:
            _reject("token expires before it was issued")
        subject = _required_str(payload, "sub")
        audiences = _audiences(payload)
        if rules.audience is not None and rules.audience not in audiences:
            _reject("audience mismatch")
        if rules.audience is not None and len(audiences) > 1 and not rules.allow_extra_audiences:
            _reject("token is addressed to other audiences too")
        scopes = _scopes(payload)
        bearer = _bearer(payload)
        confirmation = _confirmation(payload)

        if rules.kind is TokenKind.DELEGATED:
            actor = payload.get("act")
            if not isinstance(actor, dict):
                _reject("own token without act")
            if bearer is None:
                _reject("own token without bearer")
            if "scope" not in payload:
                _reject("own token without scope")
            return VerifiedToken(
                kind=TokenKind.DELEGATED,
                token_id=_required_str(payload, "jti"),
                chain_id=_required_str(payload, "chain_id"),
                issuer=rules.issuer,
                subject=subject,
                client_id=_required_str(payload, "client_id"),
                audiences=audiences,
                scopes=scopes,
                bearer=bearer,
                issued_at=issued_at,
                expires_at=expires_at,
                parent_token_id=_required_str(payload, "parent_jti"),
                actor_client_id=_required_str(actor, "sub"),
                confirmation=confirmation,
            )

        jti = _optional_str(payload, "jti")
        token_id = jti if jti is not None else token_fingerprint(signing_input)
        return VerifiedToken(
            kind=TokenKind.UPSTREAM,
            token_id=token_id,
            chain_id=root_chain_id(rules.issuer, token_id),
            issuer=rules.issuer,
            subject=subject,
            client_id=_acting_client(payload, rules.actor_claim),
            audiences=audiences,
            scopes=scopes,
            bearer=bearer if bearer is not None else Bearer(BearerType.PERSON, subject),
            issued_at=issued_at,
            expires_at=expires_at,
            confirmation=confirmation,
        )


def _confirmation(payload: Mapping[str, Any]) -> Confirmation | None:
    """``cnf`` (RFC 7800): ``jkt`` (RFC 9449) and/or ``x5t#S256`` (RFC 8705), each a SHA-256 thumbprint.

    A confirmation method the service cannot check (``jwk``, ``kid``, ...) is refused outright: a bound
    token read as a bearer token would give a child with no binding at all.
    """
    if "cnf" not in payload:
        return None
    cnf = payload["cnf"]
    if not isinstance(cnf, dict) or not cnf or set(cnf) - {JKT, X5T_S256}:
        _reject("unsupported or malformed cnf")
    values = {name: cnf.get(name) for name in (JKT, X5T_S256)}
    if any(v is not None and not (isinstance(v, str) and is_thumbprint(v)) for v in values.values()):
        _reject("malformed cnf thumbprint")
    return Confirmation(jkt=values[JKT], x5t_s256=values[X5T_S256])


def _acting_client(payload: Mapping[str, Any], actor_claim: str | None) -> str:
    """The client that holds an upstream token (SPEC §5): ``client_id``, else ``azp``, else the issuer's
    configured claim; empty when none names it (the service then refuses to delegate from it)."""
    for name in ("client_id", "azp", actor_claim):
        if name is not None:
            value = _optional_str(payload, name)
            if value:
                return value
    return ""


def _reject(detail: str) -> NoReturn:
    raise ParentRejected(detail)


def _checks(
    keys: Mapping[str, VerificationKey], *, allow_high_s: bool = False
) -> Mapping[str, SignatureCheck]:
    return MappingProxyType(
        {kid: signature_check(key, allow_high_s=allow_high_s) for kid, key in keys.items()}
    )


def _decode_signature(segment: str) -> bytes | None:
    """The signature bytes of a canonical base64url segment, or ``None``.

    Canonical only: a signature spelled with stray low bits would otherwise give one upstream token
    without ``jti`` several spellings, hence several fingerprints (token ids), one per spelling.
    """
    if not _BASE64URL.fullmatch(segment) or len(segment) % 4 == 1:
        return None
    try:
        data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        return None
    if _b64url(data).decode("ascii") != segment:
        return None
    return data


def decode_json_segment(segment: str, name: str) -> dict[str, Any]:
    """One JOSE segment decoded as strictly as a token's: canonical base64url, UTF-8, one JSON object,
    no duplicate members, bounded nesting (DPoP proofs are read the same way); ``ParentRejected`` else."""
    return _decode_segment(segment, name)


def decode_signature(segment: str) -> bytes | None:
    """The bytes of a canonical base64url signature segment, or ``None``."""
    return _decode_signature(segment)


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of duplicate members; other parsers keep the first. A token whose
    # meaning depends on the parser is refused (RFC 7515 §5.2, RFC 8725 §3.1 spirit).
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ParentRejected("duplicate JSON member")
    return result


def _refuse_constant(name: str) -> NoReturn:
    raise ParentRejected("non-standard JSON constant")  # NaN, Infinity: not JSON (RFC 8259)


# Built once: json.loads with options builds a new decoder on every call.
_JSON_DECODER = json.JSONDecoder(object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant)


def _decode_segment(segment: str, name: str) -> dict[str, Any]:
    """Decode one base64url JSON segment strictly: canonical base64url, UTF-8, one object, no duplicates."""
    if not _BASE64URL.fullmatch(segment) or len(segment) % 4 == 1:
        _reject(f"{name}: not base64url")
    try:
        data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        _reject(f"{name}: not base64url")
    # Non-canonical encodings (stray low bits) would give one token many spellings, and many ids.
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii") != segment:
        _reject(f"{name}: non-canonical base64url")
    try:
        text = data.decode("utf-8")  # explicit: json.loads(bytes) would also accept UTF-16 and UTF-32
    except UnicodeDecodeError:
        _reject(f"{name}: not UTF-8")
    try:
        value = _JSON_DECODER.decode(text)
    except RecursionError:
        _reject(f"{name}: JSON nested too deeply")
    except ValueError:
        _reject(f"{name}: not JSON")
    if not isinstance(value, dict):
        _reject(f"{name}: not a JSON object")
    if text.count("{") + text.count("[") > MAX_JSON_DEPTH and _depth(value) > MAX_JSON_DEPTH:
        _reject(f"{name}: JSON nested too deeply")
    return value


def _depth(value: object) -> int:
    """Nesting depth of parsed JSON, without recursion (the input is hostile)."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: list[object] = list(node.values())
        elif isinstance(node, list):
            children = list(node)
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _numeric_date(payload: Mapping[str, Any], name: str) -> int | None:
    """An integer NumericDate claim, or ``None`` when absent. Bools, strings and floats are refused."""
    if name not in payload:
        return None
    value = payload[name]
    # type() rather than isinstance(): bool is a subclass of int, and True is not a time.
    if type(value) is not int or not 0 <= value <= MAX_NUMERIC_DATE:
        _reject(f"{name} is not an integer time")
    return value


def _is_identifier(value: object) -> TypeGuard[str]:
    # Printable excludes control characters (log injection) and lone surrogates (cannot be encoded,
    # so hashing the value for a chain id or a Redis key would fail later).
    return isinstance(value, str) and 0 < len(value) <= MAX_IDENTIFIER_LENGTH and value.isprintable()


def _required_str(claims: Mapping[str, Any], name: str) -> str:
    """A non-empty printable string claim that must be present."""
    value = _optional_str(claims, name)
    if value is None:
        _reject(f"missing {name}")
    return value


def _optional_str(claims: Mapping[str, Any], name: str) -> str | None:
    """A non-empty printable string claim, or ``None`` when absent."""
    if name not in claims:
        return None
    value = claims[name]
    if not _is_identifier(value):
        _reject(f"malformed {name}")
    return value


def _audiences(payload: Mapping[str, Any]) -> tuple[str, ...]:
    """``aud`` as a tuple: absent, one string, or a list of strings (RFC 7519 §4.1.3)."""
    if "aud" not in payload:
        return ()
    aud = payload["aud"]
    values = [aud] if isinstance(aud, str) else aud
    if not isinstance(values, list) or not all(_is_identifier(v) for v in values):
        _reject("malformed aud")
    return tuple(values)


def _scopes(payload: Mapping[str, Any]) -> tuple[str, ...]:
    """Scopes from ``scope`` (space-separated string, RFC 9068) or else ``scp`` (a list of strings)."""
    if "scope" in payload:
        scope = payload["scope"]
        if not isinstance(scope, str) or not scope.isprintable():
            _reject("malformed scope")
        return tuple(dict.fromkeys(piece for piece in scope.split(" ") if piece))
    if "scp" in payload:
        scp = payload["scp"]
        if not isinstance(scp, list) or not all(_is_identifier(s) for s in scp):
            _reject("malformed scp")
        return tuple(dict.fromkeys(scp))
    return ()


def _bearer(payload: Mapping[str, Any]) -> Bearer | None:
    """The ``bearer`` claim ``{"type": "Per"|"Org", "id": ...}``, or ``None`` when absent."""
    if "bearer" not in payload:
        return None
    claim = payload["bearer"]
    if not isinstance(claim, dict):
        _reject("malformed bearer")
    try:
        bearer_type = BearerType(claim.get("type"))
    except ValueError:
        _reject("malformed bearer type")
    bearer_id = claim.get("id")
    if bearer_id is not None and not _is_identifier(bearer_id):
        _reject("malformed bearer id")
    return Bearer(bearer_type, bearer_id)
