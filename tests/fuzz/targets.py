"""Fuzz targets: Hypothesis tests that take only generated arguments, so they also run under
``fuzz_one_input`` (libFuzzer/atheris-style byte buffers) in ``python -m tests.fuzz.run``.

* :func:`test_token_preparser_only_ever_refuses`: anything, from random text to mutated genuine tokens,
  given to the JWT verifier ends in :class:`ParentRejected` or a verified token, never another error.
* :func:`test_scope_grammar_only_ever_refuses`: any request scopes through the splitter, the parser and
  the policy end in a decision or a :class:`DelegationError`.
* :func:`test_grpc_surface_never_answers_internal_or_unknown`: any request to any RPC of a real server
  (in-process, loopback, in-memory store) gets a definite status: never INTERNAL or UNKNOWN, and a
  refusal from the service always carries its ``ErrorInfo``.
* :func:`test_raw_bytes_never_answer_internal_or_unknown`: arbitrary bytes (random, or protobuf fields
  with invalid UTF-8, lying lengths, bad wire types) sent without a serializer to every method of the
  same server (both services, health, reflection; unary and streaming) never get INTERNAL or UNKNOWN,
  and the server logs no traceback and no error.

Resources (keys, the server) are built once per process, lazily, and stopped at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from delegation.v1 import admin_pb2, admin_pb2_grpc, delegation_pb2, delegation_pb2_grpc
from delegation_service.adapters.jwt_codec import IssuerRules, JwtVerifier, TrustedIssuer
from delegation_service.adapters.keys import KeySet, SigningKey, generate_signing_key, load_jwks
from delegation_service.app import build, load_catalog
from delegation_service.client import error_details
from delegation_service.config import Config
from delegation_service.dev import demo_catalog_path
from delegation_service.domain.encoding import b64url_encode
from delegation_service.domain.errors import DelegationError, ParentRejected
from delegation_service.domain.policy import DelegationPolicy, DelegationRequest
from delegation_service.domain.scopes import Bearer, BearerType, ScopeSyntaxError, parse_scope, split_scopes
from delegation_service.domain.tokens import TokenKind, VerifiedToken
from delegation_service.transport.auth import operator_secret_digest
from delegation_service.transport.server import RunningServer
from tests.security.forge import encode_segment, signed

OWN_ISSUER = "https://delegation.fuzz.invalid"
UPSTREAM_ISSUER = "https://idp.fuzz.invalid"
AUDIENCE = "https://delegation.fuzz.invalid/api"
DELEGATION_SCOPE = "directory.delegations.rw"
SCOPE_WORDS = [
    DELEGATION_SCOPE,
    "directory.person.rw",
    "directory.person.r",
    "warehouse.items.rw",
    "warehouse.items.r",
    "warehouse.stock.r",
    "Per.warehouse.items.r",
    "Org.warehouse.items.r",
    "Per/alice.directory.person.r",
    "https://api.publiq.be/auth/uitpas",
]
FORBIDDEN_CODES = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
# Codes gRPC itself may answer before any service code runs (no ErrorInfo possible).
CORE_CODES = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED)

FUZZ_SETTINGS = settings(
    deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


@dataclass(frozen=True)
class World:
    """Keys and a verifier for the pure targets."""

    own: SigningKey
    upstream: SigningKey
    verifier: JwtVerifier
    policy: DelegationPolicy


@functools.cache
def world() -> World:
    own, upstream = generate_signing_key("ES256"), generate_signing_key("ES256")
    trusted = TrustedIssuer(
        UPSTREAM_ISSUER, load_jwks({"keys": [dict(upstream.public_jwk)]}), IssuerRules(audience=AUDIENCE)
    )
    return World(
        own,
        upstream,
        JwtVerifier(OWN_ISSUER, KeySet(own), [trusted], leeway_seconds=30),
        DelegationPolicy(load_catalog(demo_catalog_path())),
    )


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": UPSTREAM_ISSUER,
        "sub": "alice",
        "aud": AUDIENCE,
        "client_id": "gateway",
        "scope": " ".join(SCOPE_WORDS[:4]),
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "jti": secrets.token_urlsafe(8),
        "bearer": {"type": "Per", "id": "alice"},
    }
    base.update(changes)
    return base


# --- strategies ------------------------------------------------------------------------------------

_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=20),
)
_json = st.recursive(
    _json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_claim_changes = st.dictionaries(
    st.sampled_from(["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "scope", "bearer", "client_id", "act"]),
    _json,
    max_size=3,
)
_header_changes = st.dictionaries(
    st.sampled_from(["alg", "kid", "typ", "crit", "jku", "jwk", "x5u", "x5c", "b64", "cty"]),
    _json,
    max_size=2,
)


@st.composite
def tokens(draw: st.DrawFn) -> str:
    """Hostile token-like strings: random text, forged segments, genuine tokens mutated."""
    w = world()
    kind = draw(st.sampled_from(["text", "segments", "signed", "mutated"]))
    if kind == "text":
        return draw(st.text(max_size=200))
    if kind == "segments":
        parts = draw(
            st.lists(
                st.one_of(st.text(alphabet="ABCDEFabcdef0123456789-_=+/.", max_size=40), st.just("eyJ")),
                min_size=1,
                max_size=6,
            )
        )
        return ".".join(parts)
    header: dict[str, Any] = {"alg": "ES256", "typ": "at+jwt", "kid": w.upstream.kid}
    header.update(draw(_header_changes))
    payload = claims(**draw(_claim_changes))
    if kind == "signed":
        try:
            return signed(header, payload, w.upstream, "ES256")
        except (TypeError, ValueError):
            return encode_segment({"alg": "ES256"}) + ".." + b64url_encode(b"x")
    token = signed({"alg": "ES256", "typ": "at+jwt", "kid": w.upstream.kid}, claims(), w.upstream)
    index = draw(st.integers(0, len(token) - 1))
    return token[:index] + draw(st.text(min_size=0, max_size=3)) + token[index + 1 :]


_scope_text = st.one_of(
    st.sampled_from(SCOPE_WORDS),
    st.text(max_size=40),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz._/PerOg-", max_size=40),
)
_scope_entries = st.lists(
    st.one_of(_scope_text, st.lists(_scope_text, max_size=4).map(" ".join)),
    max_size=8,
)


# --- pure targets ------------------------------------------------------------------------------------


@FUZZ_SETTINGS
@given(token=tokens())
def test_token_preparser_only_ever_refuses(token: str) -> None:
    try:
        verified = world().verifier.verify(token)
    except ParentRejected:
        return
    assert verified.issuer == UPSTREAM_ISSUER


@FUZZ_SETTINGS
@given(
    entries=_scope_entries,
    parent_scopes=st.lists(st.one_of(st.sampled_from(SCOPE_WORDS), st.text(max_size=30)), max_size=6),
    client_id=st.one_of(st.sampled_from(["billing", "search", "gateway", ""]), st.text(max_size=10)),
    allow_partial=st.booleans(),
    organisation=st.booleans(),
)
def test_scope_grammar_only_ever_refuses(
    entries: list[str], parent_scopes: list[str], client_id: str, allow_partial: bool, organisation: bool
) -> None:
    for _, text in split_scopes(entries):
        with contextlib.suppress(ScopeSyntaxError):
            parse_scope(text)
    bearer = Bearer(BearerType.ORGANIZATION, "acme") if organisation else Bearer(BearerType.PERSON, "alice")
    parent = VerifiedToken(
        kind=TokenKind.UPSTREAM,
        token_id="t",
        chain_id="c",
        issuer=UPSTREAM_ISSUER,
        subject="alice",
        client_id="gateway",
        audiences=(),
        scopes=(DELEGATION_SCOPE, *parent_scopes),
        bearer=bearer,
        issued_at=0,
        expires_at=10,
    )
    try:
        decision = world().policy.decide(parent, DelegationRequest(client_id, entries, allow_partial))
    except DelegationError:
        return
    assert all(str(scope) != DELEGATION_SCOPE for scope in decision.granted)


# --- the gRPC surface --------------------------------------------------------------------------------


@dataclass
class Surface:
    """A real server (in-process, loopback, in-memory store) and stubs on one channel."""

    running: RunningServer
    channel: grpc.Channel
    public: Any
    admin: Any
    operator: tuple[tuple[str, str]]
    upstream: SigningKey

    def close(self) -> None:
        self.channel.close()
        self.running.stop(0)


@functools.cache
def surface() -> Surface:
    secret = secrets.token_urlsafe(16)
    upstream = generate_signing_key("ES256")
    config = Config(
        listen="127.0.0.1:0",
        issuer=OWN_ISSUER,
        store="memory",
        operator_token_sha256=(operator_secret_digest(secret),),
        introspection_scope="delegation:introspect",
        operator_scope="delegation:operate",
        max_workers=8,
    ).validate()
    trusted = TrustedIssuer(
        UPSTREAM_ISSUER, load_jwks({"keys": [dict(upstream.public_jwk)]}), IssuerRules(audience=AUDIENCE)
    )
    app = build(
        config, catalog=load_catalog(demo_catalog_path()), extra_trusted=[trusted], keys=KeySet(world().own)
    )
    running = app.serve()
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    made = Surface(
        running,
        channel,
        delegation_pb2_grpc.DelegationServiceStub(channel),
        admin_pb2_grpc.DelegationAdminServiceStub(channel),
        (("authorization", f"Bearer {secret}"),),
        upstream,
    )
    atexit.register(made.close)
    return made


_proto_text = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=60)
_metadata_value = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)


@st.composite
def calls(draw: st.DrawFn) -> tuple[str, Any, list[tuple[str, str]]]:
    """One RPC: its name, a request and metadata, from well-formed to absurd."""
    s = surface()
    genuine = signed(
        {"alg": "ES256", "typ": "at+jwt", "kid": s.upstream.kid}, claims(**draw(_claim_changes)), s.upstream
    )
    token = draw(st.one_of(st.just(genuine), tokens(), _proto_text))
    rpc = draw(
        st.sampled_from(
            [
                "Delegate",
                "Introspect",
                "Revoke",
                "GetJwks",
                "RevokeChain",
                "RevokeSubject",
                "RevokeClient",
                "GetChain",
            ]
        )
    )
    metadata = draw(
        st.one_of(
            st.just([]),
            st.just(list(s.operator)),
            st.builds(lambda v: [("authorization", v)], _metadata_value),
            st.just([("authorization", f"Bearer {genuine}")]),
        )
    )
    request: Message
    if rpc == "Delegate":
        delegate = delegation_pb2.DelegateRequest(
            parent_token=token,
            client_id=draw(st.one_of(st.sampled_from(["billing", "search", "gateway"]), _proto_text)),
            scopes=[s.replace("\x00", "") for s in draw(_scope_entries)],
            allow_partial=draw(st.booleans()),
            validate_only=draw(st.booleans()),
        )
        if draw(st.booleans()):
            delegate.lifetime.seconds = draw(st.integers(-(2**63), 2**63 - 1))
            delegate.lifetime.nanos = draw(st.integers(-(2**31), 2**31 - 1))
        request = delegate
    elif rpc == "Introspect":
        request = delegation_pb2.IntrospectRequest(token=token)
    elif rpc == "Revoke":
        request = delegation_pb2.RevokeRequest(token=token)
    elif rpc == "GetJwks":
        request = delegation_pb2.GetJwksRequest()
    elif rpc == "RevokeChain":
        request = admin_pb2.RevokeChainRequest(
            chain_id=draw(_proto_text), token_id=draw(_proto_text), dry_run=draw(st.booleans())
        )
    elif rpc == "RevokeSubject":
        request = admin_pb2.RevokeSubjectRequest(subject=draw(_proto_text), justification=draw(_proto_text))
    elif rpc == "RevokeClient":
        request = admin_pb2.RevokeClientRequest(client_id=draw(_proto_text))
    else:
        request = admin_pb2.GetChainRequest(chain_id=draw(_proto_text))
    return rpc, request, metadata


@FUZZ_SETTINGS
@given(call=calls())
def test_grpc_surface_never_answers_internal_or_unknown(call: tuple[str, Any, list[tuple[str, str]]]) -> None:
    rpc, request, metadata = call
    s = surface()
    stub = s.admin if rpc.startswith(("Revoke", "GetChain")) and rpc not in ("Revoke",) else s.public
    try:
        getattr(stub, rpc)(request, timeout=10, metadata=metadata)
    except grpc.RpcError as error:
        details = error_details(error)
        assert details.code not in FORBIDDEN_CODES, (rpc, details)
        assert details.reason or details.code in CORE_CODES, (rpc, details)
    except ValueError:
        assume(False)  # the client library refused to send it (e.g. metadata it cannot encode)


# --- raw bytes on the wire -----------------------------------------------------------------------------


def _as_is(data: bytes) -> bytes:
    return data


RAW: dict[str, Callable[[bytes], bytes]] = {"request_serializer": _as_is, "response_deserializer": _as_is}
"""Channel options for calls that send and receive bytes exactly as given."""


@dataclass(frozen=True)
class RawMethod:
    """One RPC of the server, called with raw bytes (no serializer) on the channel."""

    path: str
    client_streaming: bool
    server_streaming: bool


RAW_METHODS: tuple[RawMethod, ...] = tuple(
    RawMethod(f"/{service.full_name}/{method.name}", method.client_streaming, method.server_streaming)
    for file in (delegation_pb2, admin_pb2, health_pb2, reflection_pb2)
    for service in file.DESCRIPTOR.services_by_name.values()
    for method in service.methods
)
"""Every method the server registers: both of our services, health and reflection, of every kind."""


class ErrorRecords(logging.Handler):
    """Keeps the log records that carry a traceback or are errors (the server runs in this process)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            self.records.append(record)


@functools.cache
def error_records() -> ErrorRecords:
    handler = ErrorRecords()
    logging.getLogger().addHandler(handler)
    atexit.register(logging.getLogger().removeHandler, handler)
    return handler


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


_invalid_utf8 = st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf"])


@st.composite
def _wire_field(draw: st.DrawFn) -> bytes:
    """One protobuf field, plausible or not: any field number and wire type, lengths that may lie."""
    number = draw(st.integers(1, 20) | st.integers(0, 2**29))
    wire_type = draw(st.integers(0, 7))
    key = _varint(number << 3 | wire_type)
    if wire_type == 0:
        return key + _varint(draw(st.integers(0, 2**70)))
    if wire_type == 1:
        return key + draw(st.binary(min_size=8, max_size=8))
    if wire_type == 5:
        return key + draw(st.binary(min_size=4, max_size=4))
    if wire_type == 2:
        text = draw(st.text(max_size=8)).encode("utf-8", "surrogatepass")
        payload = draw(
            st.one_of(st.just(text), st.builds(lambda b, t: t + b + t, _invalid_utf8, st.just(text)))
        )
        length = draw(st.one_of(st.just(len(payload)), st.integers(0, 2**32)))
        return key + _varint(length) + payload
    return key + draw(st.binary(max_size=8))  # groups (3, 4) and the unused types 6, 7


raw_requests = st.one_of(
    st.binary(max_size=300),
    st.lists(_wire_field(), min_size=1, max_size=6).map(b"".join),
)
"""Bytes that claim to be a request: random, or protobuf fields with bad UTF-8, lying lengths..."""


@FUZZ_SETTINGS
@given(
    method=st.sampled_from(RAW_METHODS),
    messages=st.lists(raw_requests, min_size=1, max_size=3),
    operator=st.booleans(),
)
def test_raw_bytes_never_answer_internal_or_unknown(
    method: RawMethod, messages: list[bytes], operator: bool
) -> None:
    s = surface()
    errors = error_records()
    errors.records.clear()
    metadata = s.operator if operator else ()
    code = grpc.StatusCode.OK
    try:
        if not method.client_streaming and not method.server_streaming:
            s.channel.unary_unary(method.path, **RAW)(messages[0], timeout=10, metadata=metadata)
        elif not method.client_streaming:
            stream = s.channel.unary_stream(method.path, **RAW)(messages[0], timeout=2, metadata=metadata)
            next(stream, None)  # a stream that decodes would go on: its first answer is enough
            stream.cancel()
        else:
            replies = s.channel.stream_stream(method.path, **RAW)(
                iter(messages), timeout=10, metadata=metadata
            )
            for _ in replies:
                pass
    except grpc.RpcError as error:
        code = error.code()
    assert code not in FORBIDDEN_CODES, (method.path, code)
    assert not errors.records, [record.getMessage() for record in errors.records]
