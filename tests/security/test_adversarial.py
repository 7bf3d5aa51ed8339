"""The adversarial table (issue 4): hostile inputs through a real gRPC channel to a real server over a
real Redis, each answered with the exact status code and ``ErrorInfo.reason``.

The service runs as in production (``access.mode = authenticated``, caller JWTs on, the upstream
issuer requires our audience). Positive controls at the end prove that the same harness accepts the
genuine article, so every refusal in the table is the check under test and not a broken fixture.

``CORE`` marks refusals made by gRPC itself before any service code runs (message and metadata size
limits): gRPC sends its own status there, and no ``ErrorInfo`` can be attached.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import grpc
import pytest
from cryptography.hazmat.primitives import serialization

from delegation.v1 import admin_pb2, delegation_pb2
from delegation_service.adapters.keys import generate_signing_key
from delegation_service.audit import AUDIT_LOGGER
from delegation_service.client import error_details
from delegation_service.domain.encoding import b64url_encode
from tests.security.conftest import Trap
from tests.security.forge import (
    DROP,
    Encoded,
    Raw,
    encode_segment,
    flip,
    hmac_signed,
    nested,
    signed,
    unsigned,
)
from tests.security.harness import (
    DELEGATION_SCOPE,
    INTROSPECTION_SCOPE,
    OPERATOR_SCOPE,
    SERVICE_AUDIENCE,
    UITPAS,
    UPSTREAM_ISSUER,
    AuditEvent,
    SecureService,
    bearer,
)

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
INVALID = grpc.StatusCode.INVALID_ARGUMENT
DENIED = grpc.StatusCode.PERMISSION_DENIED
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
BAD_PARENT = "INVALID_PARENT_TOKEN"
CORE = ""
"""Refused by gRPC before the service runs: no ErrorInfo exists to carry a reason."""

ATTACKER = generate_signing_key("ES256")


@dataclass(frozen=True)
class Ctx:
    """What an attack needs: the service and the loopback trap."""

    s: SecureService
    trap: Trap


@dataclass(frozen=True)
class Attack:
    """One hostile input and the exact refusal it must get."""

    name: str
    run: Callable[[Ctx], object]
    code: grpc.StatusCode
    reason: str


def now() -> int:
    return int(time.time())


def parent(
    name: str,
    token: Callable[[Ctx], str],
    code: grpc.StatusCode = UNAUTHENTICATED,
    reason: str = BAD_PARENT,
    **delegate: Any,
) -> Attack:
    """An attack through Delegate's parent token."""
    return Attack(name, lambda c: c.s.delegate(token(c), **delegate), code, reason)


def scopes(name: str, requested: list[str], code: grpc.StatusCode, reason: str, **delegate: Any) -> Attack:
    """An attack through the requested scopes of a genuine parent."""
    return Attack(name, lambda c: c.s.delegate(c.s.upstream(), scopes=requested, **delegate), code, reason)


def public_pem(c: Ctx) -> bytes:
    return c.s.upstream_key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_der(c: Ctx) -> bytes:
    return c.s.upstream_key.public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def hs256(c: Ctx, secret: bytes) -> str:
    return hmac_signed(c.s.upstream_header(alg="HS256"), c.s.upstream_claims(), secret)


def with_raw_claim(c: Ctx, member: str) -> str:
    """A genuine upstream token whose payload JSON gets ``member`` (raw JSON text) appended."""
    text = json.dumps(c.s.upstream_claims(), separators=(",", ":"))
    return c.s.upstream(payload=Raw(text[:-1] + "," + member + "}"))


def swap_segment(c: Ctx, index: int, segment: dict[str, Any]) -> str:
    """A genuine token with one segment replaced by a still well-formed one (the signature is kept)."""
    parts = c.s.upstream().split(".")
    parts[index] = encode_segment(segment)
    return ".".join(parts)


def revoked_parent(c: Ctx) -> str:
    token = c.s.upstream()
    c.s.delegate(token)  # it delegated once, so the chain is recorded
    c.s.public().Revoke(delegation_pb2.RevokeRequest(token=token), timeout=5)  # the holder revokes it
    return token


def real_child(c: Ctx) -> str:
    return str(c.s.delegate(c.s.upstream()).access_token)


def admin_call(rpc: str, metadata: Callable[[Ctx], Any] = lambda c: ()) -> Callable[[Ctx], object]:
    requests = {
        "RevokeSubject": admin_pb2.RevokeSubjectRequest(subject="alice"),
        "RevokeClient": admin_pb2.RevokeClientRequest(client_id="billing"),
        "RevokeChain": admin_pb2.RevokeChainRequest(chain_id="some-chain", dry_run=True),
        "GetChain": admin_pb2.GetChainRequest(chain_id="some-chain"),
    }
    return lambda c: getattr(c.s.admin(), rpc)(requests[rpc], timeout=5, metadata=list(metadata(c)))


def introspect(metadata: Callable[[Ctx], Any] = lambda c: ()) -> Callable[[Ctx], object]:
    return lambda c: c.s.public().Introspect(
        delegation_pb2.IntrospectRequest(token=c.s.upstream()), timeout=5, metadata=list(metadata(c))
    )


def watch(metadata: Callable[[Ctx], Any] = lambda c: ()) -> Callable[[Ctx], object]:
    def run(c: Ctx) -> object:
        stream = c.s.public().WatchRevocations(
            delegation_pb2.WatchRevocationsRequest(), timeout=5, metadata=list(metadata(c))
        )
        return list(itertools.islice(stream, 1))

    return run


def caller(scope: str = "", **claims: Any) -> Callable[[Ctx], Any]:
    """A trusted issuer's JWT presented as the caller's credential, holding ``scope``."""
    return lambda c: bearer(c.s.upstream(scope=scope, **claims))


def revoked_operator(c: Ctx) -> Any:
    token = c.s.upstream(scope=f"{OPERATOR_SCOPE} {DELEGATION_SCOPE}")
    c.s.public().Revoke(delegation_pb2.RevokeRequest(token=token), timeout=5)
    return bearer(token)


def distinct_scopes(count: int) -> list[str]:
    return [f"a{index:05d}.items.r" for index in range(count)]


NONE_VARIANTS = ("none", "None", "NONE", "nOnE")

ATTACKS: list[Attack] = [
    # --- the algorithm: none, confusion, mismatch -------------------------------------------------
    *(
        parent(
            f"alg-{alg}-unsigned",
            # mypy cannot infer a lambda that binds the loop variable as a default argument.
            lambda c, alg=alg: unsigned(c.s.upstream_header(alg=alg), c.s.upstream_claims()),  # type: ignore[misc]
        )
        for alg in NONE_VARIANTS
    ),
    parent(
        "alg-none-with-a-signature",
        lambda c: unsigned(c.s.upstream_header(alg="none"), c.s.upstream_claims(), b64url_encode(b"s" * 64)),
    ),
    parent(
        "alg-missing",
        lambda c: signed(c.s.upstream_header(alg=DROP), c.s.upstream_claims(), c.s.upstream_key, "ES256"),
    ),
    parent("alg-hs256-keyed-with-public-pem", lambda c: hs256(c, public_pem(c))),
    parent("alg-hs256-keyed-with-public-der", lambda c: hs256(c, public_der(c))),
    parent(
        "alg-hs256-keyed-with-public-jwk",
        lambda c: hs256(c, json.dumps(dict(c.s.upstream_key.public_jwk)).encode()),
    ),
    parent(
        "alg-hs256-child-keyed-with-our-public-pem",
        lambda c: hmac_signed(
            {"alg": "HS256", "typ": "at+jwt", "kid": c.s.keys.active.kid},
            c.s.own_claims(),
            c.s.keys.active.public_key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        ),
    ),
    parent("alg-rs256-header-on-an-ec-key", lambda c: c.s.upstream(header={"alg": "RS256"})),
    parent("alg-ps256-header-on-an-ec-key", lambda c: c.s.upstream(header={"alg": "PS256"})),
    parent("signed-by-an-attacker-key-under-our-kid", lambda c: c.s.upstream(key=ATTACKER)),
    # --- kid --------------------------------------------------------------------------------------
    parent("kid-unknown", lambda c: c.s.upstream(header={"kid": "no-such-key"})),
    parent("kid-path-traversal", lambda c: c.s.upstream(header={"kid": "../../../../../../dev/null"})),
    parent("kid-sql-injection", lambda c: c.s.upstream(header={"kid": "x' OR '1'='1"})),
    parent("kid-missing", lambda c: c.s.upstream(header={"kid": DROP})),
    parent("kid-not-a-string", lambda c: c.s.upstream(header={"kid": 7})),
    parent(
        "our-key-posing-as-the-upstream-issuer",
        lambda c: c.s.upstream(header={"kid": c.s.keys.active.kid}, key=c.s.keys.active),
    ),
    parent(
        "upstream-key-posing-as-our-child",
        lambda c: signed(c.s.upstream_header(), c.s.own_claims(), c.s.upstream_key),
    ),
    # --- headers that would name their own key, or extensions -------------------------------------
    parent("jku-header", lambda c: c.s.upstream(header={"jku": c.trap.url})),
    parent("x5u-header", lambda c: c.s.upstream(header={"x5u": c.trap.url})),
    parent(
        "jwk-header-with-the-attacker-key",
        lambda c: c.s.upstream(header={"jwk": dict(ATTACKER.public_jwk), "kid": ATTACKER.kid}, key=ATTACKER),
    ),
    parent("x5c-header", lambda c: c.s.upstream(header={"x5c": [base64.b64encode(b"not a cert").decode()]})),
    parent("crit-unknown-extension", lambda c: c.s.upstream(header={"crit": ["exp"], "exp": 1})),
    parent("crit-b64-unencoded-payload", lambda c: c.s.upstream(header={"b64": False, "crit": ["b64"]})),
    # --- the compact serialisation ----------------------------------------------------------------
    parent("signature-bit-flip", lambda c: flip(c.s.upstream(), 2)),
    parent("payload-bit-flip", lambda c: flip(c.s.upstream(), 1, 40)),
    parent("header-bit-flip", lambda c: flip(c.s.upstream(), 0, 12)),
    parent(
        "payload-tampered-after-signing", lambda c: swap_segment(c, 1, c.s.upstream_claims(sub="mallory"))
    ),
    parent("header-tampered-after-signing", lambda c: swap_segment(c, 0, c.s.upstream_header(typ="JWT"))),
    parent("signature-stripped", lambda c: c.s.upstream().rsplit(".", 1)[0] + "."),
    parent("two-segments", lambda c: c.s.upstream().rsplit(".", 1)[0]),
    parent("four-segments", lambda c: c.s.upstream() + ".AAAA"),
    parent("five-segments-jwe-shape", lambda c: c.s.upstream() + ".AAAA.AAAA"),
    parent("one-segment", lambda c: "eyJhbGciOiJFUzI1NiJ9"),
    parent("empty-token", lambda c: ""),
    parent(
        "bad-base64-plus-and-slash",
        lambda c: unsigned(Encoded("eyJh+GciOi/FUzI1NiJ9"), c.s.upstream_claims(), "AAAA"),
    ),
    parent(
        "base64-with-padding",
        lambda c: signed(
            Encoded(encode_segment(c.s.upstream_header()) + "=="), c.s.upstream_claims(), c.s.upstream_key
        ),
    ),
    parent(
        "non-canonical-base64",
        lambda c: signed(
            Encoded(encode_segment(c.s.upstream_header())[:-1] + "x"), c.s.upstream_claims(), c.s.upstream_key
        ),
    ),
    parent("payload-not-utf8", lambda c: c.s.upstream(payload=Encoded(b64url_encode(b"\xff\xfe{}")))),
    parent("payload-a-json-array", lambda c: c.s.upstream(payload=Raw("[1,2,3]"))),
    parent("payload-nan-constant", lambda c: with_raw_claim(c, '"x":NaN')),
    parent("duplicate-claim-sub", lambda c: with_raw_claim(c, '"sub":"mallory"')),
    parent(
        "duplicate-header-alg",
        lambda c: signed(
            Raw(f'{{"alg":"ES256","typ":"at+jwt","kid":"{c.s.upstream_key.kid}","alg":"none"}}'),
            c.s.upstream_claims(),
            c.s.upstream_key,
            "ES256",
        ),
    ),
    parent("deeply-nested-json", lambda c: with_raw_claim(c, '"x":' + nested(500))),
    parent("oversized-token", lambda c: c.s.upstream(padding="x" * 20_000)),
    # --- times ------------------------------------------------------------------------------------
    parent("expired", lambda c: c.s.upstream(iat=now() - 7200, nbf=now() - 7200, exp=now() - 3600)),
    parent("not-yet-valid", lambda c: c.s.upstream(nbf=now() + 3600)),
    parent("issued-in-the-future", lambda c: c.s.upstream(iat=now() + 3600, nbf=DROP, exp=now() + 7200)),
    parent("exp-as-a-string", lambda c: c.s.upstream(exp=str(now() + 3600))),
    parent("exp-as-a-bool", lambda c: c.s.upstream(exp=True)),
    parent("exp-as-a-float", lambda c: c.s.upstream(exp=now() + 3600.5)),
    parent("iat-as-a-string", lambda c: c.s.upstream(iat=str(now()))),
    parent("nbf-as-a-float", lambda c: c.s.upstream(nbf=now() + 0.5)),
    parent("lives-longer-than-the-horizons", lambda c: c.s.upstream(exp=now() + 3 * 86_400)),
    # --- required claims --------------------------------------------------------------------------
    parent("missing-exp", lambda c: c.s.upstream(exp=DROP)),
    parent("missing-iat", lambda c: c.s.upstream(iat=DROP)),
    parent("missing-iss", lambda c: c.s.upstream(iss=DROP)),
    parent("missing-sub", lambda c: c.s.upstream(sub=DROP)),
    parent("child-missing-jti", lambda c: c.s.own(jti=DROP)),
    # --- audience and issuer ----------------------------------------------------------------------
    parent("wrong-aud", lambda c: c.s.upstream(aud="https://other-service.example")),
    parent("extra-aud", lambda c: c.s.upstream(aud=[SERVICE_AUDIENCE, "https://other-service.example"])),
    parent("missing-aud", lambda c: c.s.upstream(aud=DROP)),
    parent("aud-suffix-trick", lambda c: c.s.upstream(aud=SERVICE_AUDIENCE + ".evil.example")),
    parent("iss-prefix-trick", lambda c: c.s.upstream(iss=UPSTREAM_ISSUER + ".evil.example")),
    parent("iss-trailing-slash", lambda c: c.s.upstream(iss=UPSTREAM_ISSUER + "/")),
    parent("iss-case-variant", lambda c: c.s.upstream(iss=UPSTREAM_ISSUER.upper())),
    parent("iss-unicode-look-alike", lambda c: c.s.upstream(iss=UPSTREAM_ISSUER.replace("idp", "\u0456dp"))),
    # --- token kinds ------------------------------------------------------------------------------
    parent("typ-dpop-proof", lambda c: c.s.upstream(header={"typ": "dpop+jwt"})),
    parent("typ-logout-token", lambda c: c.s.upstream(header={"typ": "logout+jwt"})),
    parent("own-token-without-typ", lambda c: c.s.own(header={"typ": DROP})),
    parent("forged-child-never-minted", lambda c: c.s.own()),
    parent("child-as-parent", real_child, DENIED, "DELEGATION_ACCESS_TOKEN_CANNOT_DELEGATE"),
    parent("revoked-parent-replayed", revoked_parent),
    # --- the parent's grant -----------------------------------------------------------------------
    parent(
        "parent-without-the-delegation-scope",
        lambda c: c.s.upstream(scope="warehouse.items.rw"),
        DENIED,
        "MISSING_DELEGATION_SCOPE",
    ),
    parent(
        "parent-with-the-delegation-scope-read-only",
        lambda c: c.s.upstream(scope="directory.delegations.r warehouse.items.rw"),
        DENIED,
        "MISSING_DELEGATION_SCOPE",
    ),
    Attack(
        "scope-escalation-r-to-rw",
        lambda c: c.s.delegate(
            c.s.upstream(scope=f"{DELEGATION_SCOPE} warehouse.items.r"), scopes=["warehouse.items.rw"]
        ),
        DENIED,
        "SCOPE_WAS_NOT_GRANTED_IN_PARENT",
    ),
    Attack(
        "scope-not-in-the-parent",
        lambda c: c.s.delegate(
            c.s.upstream(scope=f"{DELEGATION_SCOPE} warehouse.items.rw"), scopes=["directory.person.r"]
        ),
        DENIED,
        "SCOPE_WAS_NOT_GRANTED_IN_PARENT",
    ),
    # --- requested scopes -------------------------------------------------------------------------
    scopes("scope-foreign-audience", ["payments.cards.r"], INVALID, "INVALID_AUDIENCE"),
    scopes("scope-unknown-name", ["warehouse.secrets.r"], INVALID, "INVALID_SCOPE_NAME"),
    scopes("scope-org-only-for-a-person", ["warehouse.stock.r"], DENIED, "UNAVAILABLE_SCOPE_FOR_BEARER_TYPE"),
    scopes("scope-other-bearer-id", ["Per/bob.warehouse.items.r"], INVALID, "DIFFERENT_BEARER_TYPES"),
    scopes("scope-org-for-a-person", ["Org.warehouse.items.r"], INVALID, "DIFFERENT_BEARER_TYPES"),
    scopes("scope-case-audience", ["Warehouse.items.r"], INVALID, "INVALID_SCOPE_STRUCTURE"),
    scopes("scope-case-permission", ["warehouse.items.R"], INVALID, "INVALID_SCOPE_STRUCTURE"),
    scopes("scope-case-bearer", ["per.warehouse.items.r"], INVALID, "INVALID_SCOPE_STRUCTURE"),
    scopes("scope-cyrillic-look-alike", ["w\u0430rehouse.items.r"], INVALID, "INVALID_SCOPE_STRUCTURE"),
    scopes("scope-fullwidth-look-alike", ["\uff57arehouse.items.r"], INVALID, "INVALID_SCOPE_STRUCTURE"),
    scopes("scope-zero-width-space", ["warehouse\u200b.items.r"], INVALID, "INVALID_SCOPE_STRUCTURE"),
    scopes("scope-trailing-newline", ["warehouse.items.r\n"], INVALID, "INVALID_SCOPE_STRUCTURE"),
    scopes(
        "scope-tab-separated", ["warehouse.items.r\tdirectory.person.r"], INVALID, "INVALID_SCOPE_STRUCTURE"
    ),
    scopes("scope-permission-rwx", ["warehouse.items.rwx"], INVALID, "INVALID_SCOPE_STRUCTURE"),
    scopes(
        "scope-over-256-characters", ["warehouse.items.r" + "x" * 300], INVALID, "INVALID_SCOPE_STRUCTURE"
    ),
    scopes("scope-url-trailing-slash", [UITPAS + "/"], INVALID, "INVALID_SCOPE_NAME"),
    scopes("scope-url-upper-case-scheme", ["HTTPS" + UITPAS[5:]], INVALID, "INVALID_SCOPE_STRUCTURE"),
    scopes(
        "scope-not-allowed-for-the-client",
        ["warehouse.items.rw"],
        DENIED,
        "SCOPE_NOT_ALLOWED_FOR_CLIENT",
        client_id="search",
    ),
    scopes("scope-1000-distinct", distinct_scopes(1000), INVALID, "TOO_MANY_SCOPES"),
    scopes("scope-10000-distinct", distinct_scopes(10_000), EXHAUSTED, CORE),
    scopes(
        "delegation-scope-requested", [DELEGATION_SCOPE], DENIED, "DELEGATION_ACCESS_TOKEN_CANNOT_DELEGATE"
    ),
    scopes(
        "delegation-scope-with-a-bearer-prefix",
        ["Per." + DELEGATION_SCOPE],
        DENIED,
        "DELEGATION_ACCESS_TOKEN_CANNOT_DELEGATE",
    ),
    scopes(
        "delegation-scope-with-a-bearer-id-read-only",
        ["Per/alice.directory.delegations.r"],
        DENIED,
        "DELEGATION_ACCESS_TOKEN_CANNOT_DELEGATE",
    ),
    # --- the target client ------------------------------------------------------------------------
    scopes("unknown-client", ["warehouse.items.r"], INVALID, "UNKNOWN_CLIENT", client_id="mallory"),
    scopes(
        "client-id-with-a-newline", ["warehouse.items.r"], INVALID, "UNKNOWN_CLIENT", client_id="billing\n"
    ),
    scopes("empty-client-id", ["warehouse.items.r"], INVALID, "INVALID_REQUEST", client_id=""),
    # --- lifetimes --------------------------------------------------------------------------------
    Attack(
        "lifetime-beyond-the-parent",
        lambda c: c.s.delegate(c.s.upstream(exp=now() + 600), lifetime=(1200, 0)),
        DENIED,
        "EXPIRES_AFTER_PARENT",
    ),
    scopes("lifetime-zero", ["warehouse.items.r"], INVALID, "INVALID_LIFETIME", lifetime=(0, 0)),
    scopes("lifetime-negative", ["warehouse.items.r"], INVALID, "INVALID_LIFETIME", lifetime=(-60, 0)),
    scopes("lifetime-negative-nanos", ["warehouse.items.r"], INVALID, "INVALID_LIFETIME", lifetime=(60, -1)),
    # 2**63 itself cannot be encoded (Duration.seconds is an int64): the client library refuses it.
    scopes("lifetime-2^63-1", ["warehouse.items.r"], DENIED, "EXPIRES_AFTER_PARENT", lifetime=(2**63 - 1, 0)),
    scopes("lifetime-minus-2^63", ["warehouse.items.r"], INVALID, "INVALID_LIFETIME", lifetime=(-(2**63), 0)),
    # --- who may call what ------------------------------------------------------------------------
    Attack(
        "operator-call-without-credentials",
        admin_call("RevokeSubject"),
        UNAUTHENTICATED,
        "OPERATOR_CREDENTIALS_REQUIRED",
    ),
    Attack(
        "operator-call-with-a-wrong-secret",
        admin_call("RevokeClient", lambda c: bearer("not-the-secret")),
        UNAUTHENTICATED,
        "OPERATOR_CREDENTIALS_REQUIRED",
    ),
    Attack(
        "operator-call-with-basic-auth",
        admin_call("GetChain", lambda c: (("authorization", "Basic b3BlcmF0b3I6c2VjcmV0"),)),
        UNAUTHENTICATED,
        "OPERATOR_CREDENTIALS_REQUIRED",
    ),
    Attack(
        "subsystem-identity-calling-an-operator-rpc",
        admin_call("RevokeSubject", caller(INTROSPECTION_SCOPE)),
        DENIED,
        "OPERATOR_ROLE_REQUIRED",
    ),
    Attack(
        "authenticated-caller-without-roles-calling-an-operator-rpc",
        admin_call("GetChain", caller("warehouse.items.r")),
        DENIED,
        "OPERATOR_ROLE_REQUIRED",
    ),
    Attack(
        "revoked-operator-jwt",
        admin_call("RevokeChain", revoked_operator),
        UNAUTHENTICATED,
        "OPERATOR_CREDENTIALS_REQUIRED",
    ),
    Attack(
        "expired-operator-jwt",
        admin_call(
            "RevokeChain", caller(OPERATOR_SCOPE, iat=now() - 7200, nbf=now() - 7200, exp=now() - 3600)
        ),
        UNAUTHENTICATED,
        "OPERATOR_CREDENTIALS_REQUIRED",
    ),
    Attack(
        "operator-jwt-with-alg-none",
        admin_call(
            "RevokeSubject",
            lambda c: bearer(
                unsigned(c.s.upstream_header(alg="none"), c.s.upstream_claims(scope=OPERATOR_SCOPE))
            ),
        ),
        UNAUTHENTICATED,
        "OPERATOR_CREDENTIALS_REQUIRED",
    ),
    Attack(
        "operator-scope-in-one-of-our-children",
        admin_call("RevokeSubject", lambda c: bearer(c.s.own(scope=OPERATOR_SCOPE))),
        UNAUTHENTICATED,
        "OPERATOR_CREDENTIALS_REQUIRED",
    ),
    Attack("introspection-without-credentials", introspect(), UNAUTHENTICATED, "CALLER_CREDENTIALS_REQUIRED"),
    Attack(
        "introspection-by-a-caller-without-the-scope",
        introspect(caller("warehouse.items.r")),
        DENIED,
        "CALLER_NOT_AUTHORIZED",
    ),
    Attack(
        "introspection-with-a-child-token-as-credential",
        introspect(lambda c: bearer(real_child(c))),
        UNAUTHENTICATED,
        "CALLER_CREDENTIALS_REQUIRED",
    ),
    Attack("watch-revocations-without-credentials", watch(), UNAUTHENTICATED, "CALLER_CREDENTIALS_REQUIRED"),
    Attack(
        "watch-revocations-by-a-caller-without-the-scope",
        watch(caller("warehouse.items.r")),
        DENIED,
        "CALLER_NOT_AUTHORIZED",
    ),
    # --- sizes ------------------------------------------------------------------------------------
    parent("oversized-request", lambda c: "x" * 70_000, EXHAUSTED, CORE),
    Attack(
        "oversized-metadata",
        lambda c: c.s.delegate(c.s.upstream(), metadata=(("x-padding", "p" * 20_000),)),
        EXHAUSTED,
        CORE,
    ),
]


WHY: dict[str, str] = {
    "alg-none-unsigned": "unsigned token",
    "alg-None-unsigned": "unsigned token",
    "alg-NONE-unsigned": "unsigned token",
    "alg-nOnE-unsigned": "unsigned token",
    "alg-none-with-a-signature": "algorithm not allowed",
    "alg-missing": "algorithm not allowed",
    "alg-hs256-keyed-with-public-pem": "algorithm not allowed",
    "alg-hs256-keyed-with-public-der": "algorithm not allowed",
    "alg-hs256-keyed-with-public-jwk": "algorithm not allowed",
    "alg-hs256-child-keyed-with-our-public-pem": "algorithm not allowed",
    "alg-rs256-header-on-an-ec-key": "algorithm does not match the key",
    "alg-ps256-header-on-an-ec-key": "algorithm does not match the key",
    "signed-by-an-attacker-key-under-our-kid": "bad signature",
    "kid-unknown": "unknown kid",
    "kid-path-traversal": "unknown kid",
    "kid-sql-injection": "unknown kid",
    "kid-missing": "missing kid",
    "kid-not-a-string": "missing kid",
    "our-key-posing-as-the-upstream-issuer": "unknown kid",
    "upstream-key-posing-as-our-child": "unknown kid",
    "jku-header": "forbidden header parameter",
    "x5u-header": "forbidden header parameter",
    "jwk-header-with-the-attacker-key": "forbidden header parameter",
    "x5c-header": "forbidden header parameter",
    "crit-unknown-extension": "forbidden header parameter",
    "crit-b64-unencoded-payload": "forbidden header parameter",
    "signature-bit-flip": "bad signature",
    "payload-bit-flip": "payload: not JSON",
    "payload-tampered-after-signing": "bad signature",
    "header-tampered-after-signing": "bad signature",
    "header-bit-flip": "header: not JSON",
    "signature-stripped": "unsigned token",
    "two-segments": "not a compact JWS (three segments)",
    "four-segments": "not a compact JWS (three segments)",
    "five-segments-jwe-shape": "not a compact JWS (three segments)",
    "one-segment": "not a compact JWS (three segments)",
    "empty-token": "not a compact JWS (three segments)",
    "bad-base64-plus-and-slash": "header: not base64url",
    "base64-with-padding": "header: not base64url",
    "non-canonical-base64": "header: non-canonical base64url",
    "payload-not-utf8": "payload: not UTF-8",
    "payload-a-json-array": "payload: not a JSON object",
    "payload-nan-constant": "non-standard JSON constant",
    "duplicate-claim-sub": "duplicate JSON member",
    "duplicate-header-alg": "duplicate JSON member",
    "deeply-nested-json": "payload: JSON nested too deeply",
    "oversized-token": "token too large",
    "expired": "token expired",
    "not-yet-valid": "token not yet valid (nbf)",
    "issued-in-the-future": "token issued in the future (iat)",
    "exp-as-a-string": "exp is not an integer time",
    "exp-as-a-bool": "exp is not an integer time",
    "exp-as-a-float": "exp is not an integer time",
    "iat-as-a-string": "iat is not an integer time",
    "nbf-as-a-float": "nbf is not an integer time",
    "lives-longer-than-the-horizons": "upstream token lives longer than tokens.max_parent_age_seconds",
    "missing-exp": "missing exp or iat",
    "missing-iat": "missing exp or iat",
    "missing-iss": "missing iss",
    "missing-sub": "missing sub",
    "child-missing-jti": "missing jti",
    "wrong-aud": "audience mismatch",
    "extra-aud": "token is addressed to other audiences too",
    "missing-aud": "audience mismatch",
    "aud-suffix-trick": "audience mismatch",
    "iss-prefix-trick": "untrusted issuer",
    "iss-trailing-slash": "untrusted issuer",
    "iss-case-variant": "untrusted issuer",
    "iss-unicode-look-alike": "untrusted issuer",
    "typ-dpop-proof": "upstream token is not an access token (typ)",
    "typ-logout-token": "upstream token is not an access token (typ)",
    "own-token-without-typ": "own token without typ at+jwt",
    "forged-child-never-minted": "parent is unknown",
    "revoked-parent-replayed": "parent is revoked",
}
"""Why the service refused each bad parent, as the audit log records it (``detail``): the callers all
get the same INVALID_PARENT_TOKEN (SPEC §3.2), so this is what shows the intended check fired."""


def test_the_table_holds_at_least_45_distinct_hostile_inputs() -> None:
    names = [attack.name for attack in ATTACKS]
    assert len(names) == len(set(names))
    assert len(ATTACKS) >= 45
    assert {a.name for a in ATTACKS if a.reason == BAD_PARENT} == set(WHY)


@pytest.mark.parametrize("attack", ATTACKS, ids=[attack.name for attack in ATTACKS])
def test_hostile_input_gets_the_exact_status_and_reason(
    attack: Attack, secure: SecureService, trap: Trap, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    with pytest.raises(grpc.RpcError) as raised:
        attack.run(Ctx(secure, trap))
    details = error_details(raised.value)
    assert (details.code, details.reason) == (attack.code, attack.reason), details.message
    if attack.reason:
        assert details.domain == "delegation-service"
    if attack.reason == BAD_PARENT:
        denied = [
            r
            for r in cast("list[AuditEvent]", caplog.records)
            if getattr(r, "event", "") == "delegate" and r.outcome == "denied"
        ]
        assert denied[-1].detail == WHY[attack.name]


def test_jku_and_x5u_urls_are_never_fetched(secure: SecureService, trap: Trap) -> None:
    """The trap is a listener we own on loopback: a fetch of the URL would show up as a connection."""
    for name in ("jku-header", "x5u-header"):
        attack = next(a for a in ATTACKS if a.name == name)
        with pytest.raises(grpc.RpcError):
            attack.run(Ctx(secure, trap))
    assert trap.connections() == 0
    # The trap does see a connection when one is made (so the zero above means something).
    import socket  # noqa: PLC0415

    host, port = trap.sock.getsockname()
    with socket.create_connection((host, port), timeout=2):
        assert trap.connections() == 1


# --- positive controls: the same harness accepts the genuine article ---------------------------------


def test_a_genuine_parent_delegates(secure: SecureService) -> None:
    assert list(secure.delegate(secure.upstream()).scopes) == ["warehouse.items.r"]


def test_an_introspector_jwt_may_introspect(secure: SecureService) -> None:
    child = real_child(Ctx(secure, None))  # type: ignore[arg-type]
    response = secure.public().Introspect(
        delegation_pb2.IntrospectRequest(token=child),
        timeout=5,
        metadata=list(bearer(secure.upstream(scope=INTROSPECTION_SCOPE))),
    )
    assert response.active


def test_an_operator_jwt_and_the_operator_secret_may_call_operator_rpcs(secure: SecureService) -> None:
    operator_jwt = bearer(secure.upstream(scope=OPERATOR_SCOPE))
    secure.admin().RevokeSubject(
        admin_pb2.RevokeSubjectRequest(subject="nobody-in-particular"), timeout=5, metadata=list(operator_jwt)
    )
    chain = secure.delegate(secure.upstream()).chain_id
    response = secure.admin().GetChain(
        admin_pb2.GetChainRequest(chain_id=chain), timeout=5, metadata=list(secure.operator_metadata())
    )
    assert len(response.tokens) == 2


def test_operators_may_introspect_too(secure: SecureService) -> None:
    response = secure.public().Introspect(
        delegation_pb2.IntrospectRequest(token=secure.upstream()),
        timeout=5,
        metadata=list(secure.operator_metadata()),
    )
    assert response.active
