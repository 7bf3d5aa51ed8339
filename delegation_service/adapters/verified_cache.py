"""A bounded cache of verified tokens, in front of any :class:`TokenVerifier`.

A gateway presents the same parent for many children; verifying its signature each time is the largest
CPU cost of a Delegate. Only *successful* verifications are kept, keyed by a hash of the whole token
(so a token that differs in one bit is a miss), and never past the token's ``exp``. Revocation is not
cached: the use cases check the store on every call, whatever this cache says. When a trusted issuer's
keys change (a remote JWKS refresh), the cache starts over: a token signed by a key that left the
provider's JWKS must stop verifying then, not at its ``exp``.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable

from delegation_service.domain.ports import Clock, TokenVerifier
from delegation_service.domain.tokens import VerifiedToken


class CachingVerifier:
    """Least-recently-used cache of up to ``max_entries`` verified tokens."""

    def __init__(
        self,
        inner: TokenVerifier,
        clock: Clock,
        max_entries: int,
        key_generation: Callable[[], int] = lambda: 0,
    ) -> None:
        if max_entries <= 0:
            raise ValueError("max_entries must be positive")
        self._inner = inner
        self._clock = clock
        self._max_entries = max_entries
        self._entries: OrderedDict[bytes, VerifiedToken] = OrderedDict()
        self._lock = threading.Lock()
        self._key_generation = key_generation
        self._generation = key_generation()

    def verify(self, raw_token: str) -> VerifiedToken:
        """The cached verification of ``raw_token`` while it is unexpired, else a fresh one."""
        key = hashlib.sha256(raw_token.encode("utf-8", "surrogatepass")).digest()
        now = self._clock.now()
        generation = self._key_generation()
        with self._lock:
            if generation != self._generation:
                self._entries.clear()
                self._generation = generation
            cached = self._entries.get(key)
            if cached is not None:
                if cached.expires_at > now:
                    self._entries.move_to_end(key)
                    return cached
                del self._entries[key]
        token = self._inner.verify(raw_token)  # raises for a bad token: failures are never cached
        with self._lock:
            if generation != self._generation:
                return token  # verified with keys that have changed since: not worth keeping
            self._entries[key] = token
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return token

    def __len__(self) -> int:
        return len(self._entries)
