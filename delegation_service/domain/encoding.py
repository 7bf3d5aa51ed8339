"""base64url without padding (RFC 7515 §2, RFC 4648 §5): the one home of its helpers.

Token ids, chain ids, fingerprints, key thumbprints and JOSE segments are written with
:func:`b64url_encode`. The JWT layer reads what a token carries with :func:`b64url_decode_canonical`,
which refuses padding and non-canonical spellings; tests and tools that take a compact JWS apart read
its segments with the lenient :func:`b64url_decode`.
"""

from __future__ import annotations

import base64
import binascii
import re

_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")


def b64url_encode(data: bytes) -> str:
    """``data`` in base64url, without ``=`` padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """The bytes of a base64url string, with or without its ``=`` padding."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url_decode_canonical(text: str, *, canonical: bool = True) -> bytes | None:
    """The bytes of an unpadded base64url string, or ``None`` when it is not one.

    Canonical unless told otherwise: no padding, no character outside the alphabet, no stray low bits
    in the last character. A token spelled several ways would otherwise have several fingerprints (token
    ids), one per spelling. ``canonical=False`` still refuses padding and foreign characters; it tells a
    respelling apart from garbage, for the log.
    """
    if not _ALPHABET.fullmatch(text) or len(text) % 4 == 1:
        return None
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    if canonical and b64url_encode(data) != text:
        return None
    return data
