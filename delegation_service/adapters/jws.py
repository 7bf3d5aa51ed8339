"""The strict outer layer of a JWT: compact form, header policy and claim types (RFC 7515, RFC 7519).

Every input is hostile (RFC 8725). Nothing is read before it is bounded; both JSON segments are parsed
here, once, refusing duplicate members (so what is checked is exactly what was signed), non-canonical
base64url, non-UTF-8 text and deep nesting. Every refusal is a :class:`ParentRejected` whose ``detail``
(for the log) is a fixed phrase that never repeats any part of the token. Signatures are not checked
here (:mod:`signatures`), and neither is what the claims mean (:mod:`jwt_codec`, :mod:`upstream_claims`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Any, NoReturn, TypeGuard

from delegation_service.domain.encoding import b64url_decode_canonical, b64url_encode
from delegation_service.domain.errors import ParentRejected

ACCESS_TOKEN_TYP = "at+jwt"
"""RFC 9068 §2.1: the ``typ`` of a JWT access token."""

FORBIDDEN_HEADERS: frozenset[str] = frozenset({"jku", "x5u", "jwk", "x5c", "crit", "b64"})
"""Headers that would let a token name its own key (``jku``, ``x5u``, ``jwk``, ``x5c``), demand
extensions we do not implement (``crit``) or change what is signed (``b64``, RFC 7797). Never followed:
a token carrying one is refused outright."""

UPSTREAM_TYPS: frozenset[str] = frozenset({"jwt", "application/jwt", "at+jwt", "application/at+jwt"})
"""The ``typ`` values an upstream access token may carry (or none). Any other explicit type (ID token,
logout token, DPoP proof, SET...) is another kind of JWT and must not pass for an access token (RFC 8725
§3.11). ``typ`` is a media type, hence compared case-insensitively (RFC 7515 §4.1.9)."""

MAX_JSON_DEPTH = 16
"""Deepest nesting of objects and arrays a token's JSON may have (RFC 8693 ``act`` may nest)."""

MAX_NUMERIC_DATE = 253_402_300_799
"""9999-12-31T23:59:59Z: larger "times" are garbage, and would overflow stores downstream."""

MAX_IDENTIFIER_LENGTH = 1024

_JSON_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)


def reject(detail: str) -> NoReturn:
    """Refuse the token, with a fixed ``detail`` for the log."""
    raise ParentRejected(detail)


def encode_json(value: Mapping[str, object]) -> bytes:
    """Compact, ASCII-only JSON of a header or a claims set."""
    return _JSON_ENCODER.encode(dict(value)).encode("ascii")


def encode_segment(value: bytes) -> bytes:
    """One base64url segment, as the bytes that go into the signing input."""
    return b64url_encode(value).encode("ascii")


@dataclass(frozen=True)
class Header:
    """The protected header members the verifier acts on, checked against the header policy."""

    alg: str
    kid: str
    typ: str | None


@dataclass(frozen=True)
class CompactJws:
    """A compact JWS split into its three segments, none decoded yet but the bounds checked."""

    header_segment: str
    payload_segment: str
    signature_segment: str

    @property
    def signing_input(self) -> str:
        """``header.payload``, exactly as received: what the signature covers."""
        return f"{self.header_segment}.{self.payload_segment}"


def split_compact(raw_token: object, max_bytes: int) -> CompactJws:
    """The three segments of a compact JWS, after bounding the work (size, ASCII, three segments)."""
    if not isinstance(raw_token, str):
        reject("token is not a string")
    if len(raw_token) > max_bytes:
        reject("token too large")
    if not raw_token.isascii():
        reject("token is not ASCII")  # so from here on, characters are bytes
    segments = raw_token.split(".")
    if len(segments) != 3:
        reject("not a compact JWS (three segments)")
    header_segment, payload_segment, signature_segment = segments
    if not signature_segment:
        reject("unsigned token")
    return CompactJws(header_segment, payload_segment, signature_segment)


def check_header(header: Mapping[str, Any], algorithms: Set[str]) -> Header:
    """The header policy: an allowed ``alg``, a ``kid``, a string ``typ`` if any, nothing forbidden."""
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms:
        reject("algorithm not allowed")
    if FORBIDDEN_HEADERS & header.keys():
        reject("forbidden header parameter")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        reject("missing kid")
    typ = header.get("typ")
    if typ is not None and not isinstance(typ, str):
        reject("malformed typ")
    return Header(alg, kid, typ)


def decode_signature(segment: str) -> bytes | None:
    """The signature bytes of a canonical base64url segment, or ``None``."""
    return b64url_decode_canonical(segment)


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


def decode_segment(segment: str, name: str) -> dict[str, Any]:
    """Decode one base64url JSON segment strictly: canonical base64url, UTF-8, one object, no duplicates."""
    data = b64url_decode_canonical(segment)
    if data is None:
        if b64url_decode_canonical(segment, canonical=False) is not None:
            reject(f"{name}: non-canonical base64url")
        reject(f"{name}: not base64url")
    try:
        text = data.decode("utf-8")  # explicit: json.loads(bytes) would also accept UTF-16 and UTF-32
    except UnicodeDecodeError:
        reject(f"{name}: not UTF-8")
    try:
        value = _JSON_DECODER.decode(text)
    except RecursionError:
        reject(f"{name}: JSON nested too deeply")
    except ValueError:
        reject(f"{name}: not JSON")
    if not isinstance(value, dict):
        reject(f"{name}: not a JSON object")
    if text.count("{") + text.count("[") > MAX_JSON_DEPTH and _depth(value) > MAX_JSON_DEPTH:
        reject(f"{name}: JSON nested too deeply")
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


# Claim types (RFC 7519 §2, §4.1): what a value must look like, whatever the claim means.


def numeric_date(payload: Mapping[str, Any], name: str) -> int | None:
    """An integer NumericDate claim, or ``None`` when absent. Bools, strings and floats are refused."""
    if name not in payload:
        return None
    value = payload[name]
    # type() rather than isinstance(): bool is a subclass of int, and True is not a time.
    if type(value) is not int or not 0 <= value <= MAX_NUMERIC_DATE:
        reject(f"{name} is not an integer time")
    return value


def is_identifier(value: object) -> TypeGuard[str]:
    """A non-empty printable string of bounded length.

    Printable excludes control characters (log injection) and lone surrogates (cannot be encoded, so
    hashing the value for a chain id or a Redis key would fail later).
    """
    return isinstance(value, str) and 0 < len(value) <= MAX_IDENTIFIER_LENGTH and value.isprintable()


def required_str(claims: Mapping[str, Any], name: str) -> str:
    """A non-empty printable string claim that must be present."""
    value = optional_str(claims, name)
    if value is None:
        reject(f"missing {name}")
    return value


def optional_str(claims: Mapping[str, Any], name: str) -> str | None:
    """A non-empty printable string claim, or ``None`` when absent."""
    if name not in claims:
        return None
    value = claims[name]
    if not is_identifier(value):
        reject(f"malformed {name}")
    return value


def audiences(payload: Mapping[str, Any]) -> tuple[str, ...]:
    """``aud`` as a tuple: absent, one string, or a list of strings (RFC 7519 §4.1.3)."""
    if "aud" not in payload:
        return ()
    aud = payload["aud"]
    values = [aud] if isinstance(aud, str) else aud
    if not isinstance(values, list) or not all(is_identifier(v) for v in values):
        reject("malformed aud")
    return tuple(values)
