"""JWT adapters: :class:`JwtSigner` (``TokenSigner``) and :class:`JwtVerifier` (``TokenVerifier``).

Three layers, each in its own module: :mod:`jws` reads the compact form, the header and the claim types
strictly (hostile input, RFC 8725); :mod:`signatures` checks and makes signatures (PyJWT's algorithm
objects, low-S for ECDSA); this module holds the rules: the token chooses nothing (the unverified ``iss``
selects an issuer by exact string equality, the ``kid`` selects a key *of that issuer only*, and the key,
not the header, fixes the algorithm), and the claims are checked here with the injected clock, so every
time rule is testable and applied the same way to upstream and own tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from delegation_service.adapters import jws
from delegation_service.adapters.clock import SystemClock
from delegation_service.adapters.jws import ACCESS_TOKEN_TYP, encode_json, encode_segment, reject
from delegation_service.adapters.keys import (
    ASYMMETRIC_ALGORITHMS,
    DEFAULT_UPSTREAM_ALGORITHMS,
    KeySet,
    KeySource,
    SigningKey,
    VerificationKey,
    distinct_keys,
)
from delegation_service.adapters.signatures import SignatureCheck, signature_check, signature_function
from delegation_service.adapters.upstream_claims import (
    DEFAULT_MAPPING,
    ClaimMapping,
    bearer_claim,
    default_scopes,
)
from delegation_service.domain.binding import JKT, X5T_S256, Confirmation, is_thumbprint
from delegation_service.domain.errors import ParentRejected
from delegation_service.domain.ports import Clock
from delegation_service.domain.tokens import (
    ChildToken,
    TokenKind,
    VerifiedToken,
    root_chain_id,
    token_fingerprint,
)


def compact_jws(header: Mapping[str, object], payload: bytes, key: SigningKey) -> str:
    """The compact JWS of ``payload`` under ``header``, signed with ``key`` (low-S for ECDSA)."""
    signing_input = encode_segment(encode_json(header)) + b"." + encode_segment(payload)
    return (signing_input + b"." + encode_segment(signature_function(key)(signing_input))).decode("ascii")


class JwtSigner:
    """Signs child tokens with the active key of a :class:`KeySet` (RFC 9068 profile, SPEC §4)."""

    def __init__(self, keys: KeySet) -> None:
        self._keys = keys
        active = keys.active
        # The same header for every child, encoded once: a child costs one JSON encoding, one base64url
        # encoding and one signature.
        header = {"alg": active.alg, "kid": active.kid, "typ": ACCESS_TOKEN_TYP}
        self._header_segment = encode_segment(encode_json(dict(sorted(header.items()))))
        self._sign = signature_function(active)

    @property
    def keys(self) -> KeySet:
        """The key set this signer signs with."""
        return self._keys

    def sign(self, child: ChildToken) -> str:
        """The compact JWS of ``child``'s claims, with ``typ: at+jwt`` and the active ``kid``."""
        signing_input = self._header_segment + b"." + encode_segment(encode_json(child.claims()))
        return (signing_input + b"." + encode_segment(self._sign(signing_input))).decode("ascii")

    def jwks(self) -> Mapping[str, object]:
        """The public JWK Set of every key in the set (never any private member)."""
        return self._keys.jwks()


@dataclass(frozen=True)
class IssuerRules:
    """What a trusted issuer's tokens must satisfy besides a good signature: the settings of a
    ``[[trusted_issuers]]`` table carry it and the verifier applies it, so a new rule is a field here."""

    audience: str | None = None
    algorithms: Sequence[str] = DEFAULT_UPSTREAM_ALGORITHMS
    allow_extra_audiences: bool = False
    """With an ``audience``, whether a token may name other audiences besides it. Off by default: a token
    addressed to several services can be replayed to us by any of them (RFC 8725 §3.9)."""
    actor_claim: str | None = None
    """The claim naming the client that holds a token, for an issuer that puts it in neither
    ``client_id`` (RFC 9068) nor ``azp`` (OpenID Connect); it becomes the child's ``act.sub``. Shorthand
    for ``claims.client = ["client_id", "azp", actor_claim]``."""
    claims: ClaimMapping = DEFAULT_MAPPING
    """Where the issuer's tokens hold their scopes, client and bearer (:mod:`upstream_claims`)."""
    allow_high_s: bool = False
    """Accept high-S ECDSA signatures from an issuer whose library does not normalise them. Safe for
    revocation (a token's identity never covers its signature), but off by default (SPEC §5)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "algorithms", tuple(self.algorithms))


DEFAULT_RULES = IssuerRules()


@dataclass(frozen=True)
class TrustedIssuer:
    """An upstream issuer whose access tokens may be parents: its exact ``iss``, its keys and its rules."""

    issuer: str
    keys: Mapping[str, VerificationKey] = field(default_factory=dict, repr=False)
    """A fixed key set (a JWKS file); or, instead, a ``source`` of keys that change (a remote JWKS)."""
    rules: IssuerRules = DEFAULT_RULES
    source: KeySource | None = field(default=None, repr=False, compare=False)
    """Where the keys are looked up by kid when they change at run time (:mod:`remote_jwks`)."""

    def __post_init__(self) -> None:
        if not self.issuer:
            raise ValueError("a trusted issuer needs a non-empty issuer string")
        if bool(self.keys) == (self.source is not None):
            raise ValueError(f"trusted issuer {self.issuer!r} needs keys or a key source (one of them)")
        rules = self.rules
        if set(rules.algorithms) - ASYMMETRIC_ALGORITHMS or not rules.algorithms:
            raise ValueError(f"trusted issuer {self.issuer!r}: only asymmetric algorithms may be allowed")
        if rules.audience is not None and not rules.audience:
            raise ValueError("a required audience must be non-empty")
        if rules.actor_claim is not None and not rules.actor_claim:
            raise ValueError("an actor claim must be non-empty")
        for kid, key in self.keys.items():
            if kid != key.kid:
                raise ValueError(f"trusted issuer {self.issuer!r}: key map and kid disagree")
        # Frozen: normalise once so nobody can mutate the issuer's rules behind the verifier's back.
        object.__setattr__(
            self, "rules", replace(rules, claims=rules.claims.with_actor_claim(rules.actor_claim))
        )
        object.__setattr__(self, "keys", MappingProxyType(dict(self.keys)))


@dataclass(frozen=True)
class _Issuer:
    """What the verifier knows of one issuer, resolved at construction."""

    issuer: str
    kind: TokenKind
    keys: Mapping[str, VerificationKey]
    rules: IssuerRules
    algorithms: frozenset[str]
    checks: Mapping[tuple[str, str], SignatureCheck] = field(default_factory=dict, repr=False)
    """Each key's signature check, by kid and algorithm, built once."""
    source: KeySource | None = None
    """Instead of ``keys``: asked for each kid (a remote JWKS, refreshed behind it)."""
    source_checks: dict[tuple[VerificationKey, str], SignatureCheck] = field(default_factory=dict, repr=False)
    """The signature checks of the source's keys, built once per key object and algorithm, not per call."""


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
        own_algorithms = tuple(key.alg for key in own_verification_keys)
        issuers: dict[str, _Issuer] = {
            own_issuer: _Issuer(
                issuer=own_issuer,
                kind=TokenKind.DELEGATED,
                keys=own_keys.verification_keys(),
                rules=IssuerRules(algorithms=own_algorithms),
                algorithms=frozenset(own_algorithms),
                checks=_checks(own_keys.verification_keys()),
            )
        }
        for trusted_issuer in trusted:
            name, rules = trusted_issuer.issuer, trusted_issuer.rules
            if name in issuers:
                # Our own issuer upstream would let a child pass for a root; a duplicate is ambiguous.
                raise ValueError(f"issuer {name!r} is ours or listed twice")
            if trusted_issuer.keys and not distinct_keys(
                own_verification_keys, list(trusted_issuer.keys.values())
            ):
                # A token signed by our key must never verify as an upstream (root) token.
                raise ValueError(f"trusted issuer {name!r} lists one of our own signing keys")
            issuers[name] = _Issuer(
                issuer=name,
                kind=TokenKind.UPSTREAM,
                keys=trusted_issuer.keys,
                rules=rules,
                algorithms=frozenset(rules.algorithms),
                checks=_checks(trusted_issuer.keys, allow_high_s=rules.allow_high_s),
                source=trusted_issuer.source,
            )
        self._issuers: Mapping[str, _Issuer] = MappingProxyType(issuers)
        self._algorithms = frozenset().union(*(i.algorithms for i in issuers.values()))
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
        # 1. Bound the work before parsing anything; 2. the header may choose nothing dangerous.
        token = jws.split_compact(raw_token, self._max_token_bytes)
        header = jws.check_header(jws.decode_segment(token.header_segment, "header"), self._algorithms)

        # 3. The unverified iss selects the issuer (exact equality); the signature proves it below.
        payload = jws.decode_segment(token.payload_segment, "payload")
        iss = payload.get("iss")
        if not isinstance(iss, str):
            reject("missing iss")
        issuer = self._issuers.get(iss)
        if issuer is None:
            reject("untrusted issuer")
        if header.alg not in issuer.algorithms:
            reject("algorithm not allowed for the issuer")
        check = self._check(issuer, header.kid, header.alg)
        if issuer.kind is TokenKind.DELEGATED:
            if header.typ != ACCESS_TOKEN_TYP:
                reject("own token without typ at+jwt")
        elif header.typ is not None and header.typ.lower() not in jws.UPSTREAM_TYPS:
            reject("upstream token is not an access token (typ)")

        # 4. Signature, with the key object parsed at start-up and the key's own algorithm only, over the
        # exact bytes received (the segments decoded above are not decoded again).
        signature = jws.decode_signature(token.signature_segment)
        signing_input = token.signing_input
        if signature is None or not check(signature, signing_input.encode("ascii")):
            reject("bad signature")

        # 5. Claims: from the payload parsed above, which is exactly the signed one (no duplicates).
        return self._claims(signing_input, issuer, payload)

    def _check(self, issuer: _Issuer, kid: str, alg: str) -> SignatureCheck:
        """The signature check of the issuer's key ``kid`` under ``alg``; refused when the issuer has no
        such key, or the key may not verify ``alg`` (its own ``alg``, or the issuer's list by key type)."""
        if issuer.source is None:
            key = issuer.keys.get(kid)
            if key is None:
                reject("unknown kid")
            if alg not in key.algorithms:
                reject("algorithm does not match the key")
            return issuer.checks[kid, alg]
        key = issuer.source.key(kid)
        if key is None:
            reject("unknown kid")
        if key.thumbprint in self._own_thumbprints:
            # A token signed by our key must never verify as an upstream (root) token.
            reject("upstream key is one of our own signing keys")
        if alg not in key.algorithms:
            reject("algorithm does not match the key")
        check = issuer.source_checks.get((key, alg))
        if check is None:
            if len(issuer.source_checks) > 64:
                issuer.source_checks.clear()  # keys rotated out many times over: start afresh
            check = signature_check(key, alg, allow_high_s=issuer.rules.allow_high_s)
            issuer.source_checks[key, alg] = check
        return check

    @property
    def key_generation(self) -> int:
        """Changes whenever a trusted issuer's key set changes (verified-token caches start over)."""
        return sum(r.source.generation for r in self._issuers.values() if r.source is not None)

    def _claims(self, signing_input: str, issuer: _Issuer, payload: Mapping[str, Any]) -> VerifiedToken:
        now = self._clock.now()
        expires_at = jws.numeric_date(payload, "exp")
        issued_at = jws.numeric_date(payload, "iat")
        not_before = jws.numeric_date(payload, "nbf")
        if expires_at is None or issued_at is None:
            reject("missing exp or iat")
        if expires_at <= now - self._leeway:
            reject("token expired")
        if not_before is not None and not_before > now + self._leeway:
            reject("token not yet valid (nbf)")
        if issued_at > now + self._leeway:
            reject("token issued in the future (iat)")
        if expires_at <= issued_at:
            reject("token expires before it was issued")
        subject = jws.required_str(payload, "sub")
        audiences = jws.audiences(payload)
        rules = issuer.rules
        if rules.audience is not None and rules.audience not in audiences:
            reject("audience mismatch")
        if rules.audience is not None and len(audiences) > 1 and not rules.allow_extra_audiences:
            reject("token is addressed to other audiences too")
        confirmation = _confirmation(payload)
        if issuer.kind is TokenKind.DELEGATED:
            scopes = default_scopes(payload)
            bearer = bearer_claim(payload)
            actor = payload.get("act")
            if not isinstance(actor, dict):
                reject("own token without act")
            if bearer is None:
                reject("own token without bearer")
            if "scope" not in payload:
                reject("own token without scope")
            return VerifiedToken(
                kind=TokenKind.DELEGATED,
                token_id=jws.required_str(payload, "jti"),
                chain_id=jws.required_str(payload, "chain_id"),
                issuer=issuer.issuer,
                subject=subject,
                client_id=jws.required_str(payload, "client_id"),
                audiences=audiences,
                scopes=scopes,
                bearer=bearer,
                issued_at=issued_at,
                expires_at=expires_at,
                parent_token_id=jws.required_str(payload, "parent_jti"),
                actor_client_id=jws.required_str(actor, "sub"),
                confirmation=confirmation,
            )

        # An upstream token's scopes, client and bearer: read where its issuer puts them, and only there.
        claims = rules.claims
        scopes = claims.scopes(payload)
        client_id = claims.client(payload)
        bearer = claims.bearer_of(payload, subject, client_id)
        jti = jws.optional_str(payload, "jti")
        token_id = jti if jti is not None else token_fingerprint(signing_input)
        return VerifiedToken(
            kind=TokenKind.UPSTREAM,
            token_id=token_id,
            chain_id=root_chain_id(issuer.issuer, token_id),
            issuer=issuer.issuer,
            subject=subject,
            client_id=client_id,
            audiences=audiences,
            scopes=scopes,
            bearer=bearer,
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
        reject("unsupported or malformed cnf")
    values = {name: cnf.get(name) for name in (JKT, X5T_S256)}
    if any(v is not None and not (isinstance(v, str) and is_thumbprint(v)) for v in values.values()):
        reject("malformed cnf thumbprint")
    return Confirmation(jkt=values[JKT], x5t_s256=values[X5T_S256])


def _checks(
    keys: Mapping[str, VerificationKey], *, allow_high_s: bool = False
) -> Mapping[tuple[str, str], SignatureCheck]:
    return MappingProxyType(
        {
            (kid, alg): signature_check(key, alg, allow_high_s=allow_high_s)
            for kid, key in keys.items()
            for alg in key.algorithms
        }
    )
