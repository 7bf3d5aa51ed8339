"""A token forge for the adversarial tests: any header, any payload, any signature, bypassing our signer.

Segments can be given as dicts (serialised compactly), as raw JSON text (to write duplicate members or
deep nesting), or as finished base64url strings (to write bad base64).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import get_default_algorithms

from delegation_service.adapters.jwt_codec import low_s
from delegation_service.adapters.keys import SigningKey
from delegation_service.domain.encoding import b64url_encode

DROP = object()
"""A claim or header value meaning: leave this member out."""


class Raw(str):
    """A segment given as raw JSON text, encoded as is."""


class Encoded(str):
    """A segment given already encoded (possibly invalid base64url), used verbatim."""


Segment = Mapping[str, Any] | Raw | Encoded


def encode_segment(segment: Segment) -> str:
    """The base64url form of a header or payload."""
    if isinstance(segment, Encoded):
        return str(segment)
    if isinstance(segment, Raw):
        return b64url_encode(segment.encode("utf-8"))
    return b64url_encode(json.dumps(dict(segment), separators=(",", ":")).encode("utf-8"))


def merge(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied; a :data:`DROP` value removes the member."""
    merged = dict(base)
    for name, value in changes.items():
        if value is DROP:
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged


def signed(header: Segment, payload: Segment, key: SigningKey, alg: str | None = None) -> str:
    """A compact JWS signed with ``key`` under ``alg`` (default: the key's own), whatever the header says."""
    signing_input = f"{encode_segment(header)}.{encode_segment(payload)}"
    algorithm = get_default_algorithms()[alg or key.alg]
    signature = algorithm.sign(signing_input.encode("ascii"), key.private_key)
    if isinstance(key.private_key, ec.EllipticCurvePrivateKey):
        signature = low_s(signature, key.private_key.curve)  # what a conforming issuer sends
    return f"{signing_input}.{b64url_encode(signature)}"


def hmac_signed(header: Segment, payload: Segment, secret: bytes) -> str:
    """A compact JWS whose signature is HMAC-SHA256 keyed with ``secret`` (algorithm-confusion attacks)."""
    signing_input = f"{encode_segment(header)}.{encode_segment(payload)}"
    signature = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url_encode(signature)}"


def unsigned(header: Segment, payload: Segment, signature: str = "") -> str:
    """A compact JWS with the given (or no) signature segment."""
    return f"{encode_segment(header)}.{encode_segment(payload)}.{signature}"


def flip(token: str, segment: int, position: int = 5) -> str:
    """``token`` with one base64url character of one segment changed (a bit flip that stays decodable)."""
    parts = token.split(".")
    text = parts[segment]
    index = min(position, len(text) - 2)
    replacement = "A" if text[index] != "A" else "B"
    parts[segment] = text[:index] + replacement + text[index + 1 :]
    return ".".join(parts)


def new_jti() -> str:
    """A fresh token id."""
    return secrets.token_urlsafe(12)


def nested(depth: int) -> str:
    """JSON text of ``depth`` nested arrays."""
    return "[" * depth + "]" * depth
