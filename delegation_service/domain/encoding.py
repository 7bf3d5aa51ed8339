"""base64url without padding (RFC 7515 §2, RFC 4648 §5): the one pair of helpers outside the JWT codec.

Token ids, chain ids, fingerprints and key thumbprints are written with :func:`b64url_encode`; tests
and tools that take a compact JWS apart read its segments with :func:`b64url_decode`. The codec keeps
its own strict reader (it refuses padding and non-canonical spellings, which this one accepts).
"""

from __future__ import annotations

import base64


def b64url_encode(data: bytes) -> str:
    """``data`` in base64url, without ``=`` padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """The bytes of a base64url string, with or without its ``=`` padding."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
