"""Unpadded base64url (RFC 7515 §2, RFC 4648 §5): the one encoder and the one strict decoder.

Every JOSE segment, JWK member and thumbprint of this service goes through these two functions.
"""

from __future__ import annotations

import base64
import binascii
import re

_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")


def encode(data: bytes) -> str:
    """``data`` as unpadded base64url text."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode(text: str, *, canonical: bool = True) -> bytes | None:
    """The bytes of an unpadded base64url string, or ``None``.

    Canonical only unless told otherwise: no padding, no characters outside the alphabet, and no stray
    low bits in the last character. A token spelled several ways would otherwise have several
    fingerprints (token ids), one per spelling.
    """
    if not _ALPHABET.fullmatch(text) or len(text) % 4 == 1:
        return None
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    if canonical and encode(data) != text:
        return None
    return data
