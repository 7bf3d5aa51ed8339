"""The DPoP replay cache (:class:`~delegation_service.domain.dpop.ProofReplayCache`): in memory for one
process (the dev server, tests), in Redis for a fleet. Both pass ``tests/contract/test_dpop_replay.py``.

A proof is remembered by its key's thumbprint and its ``jti`` until it would be too old to accept
anyway, so memory stays bounded by the rate of proofs times their window.
"""

from __future__ import annotations

import hashlib
import heapq
import threading

import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from delegation_service.domain.errors import StoreUnavailable
from delegation_service.domain.ports import Clock

MAX_MEMORY_ENTRIES = 100_000


def _key_suffix(jkt: str, jti: str) -> str:
    # Hashed: a jti is the client's choice (up to 256 characters); the key stays short and printable.
    return hashlib.sha256(f"{jkt}\x00{jti}".encode()).hexdigest()[:32]


class MemoryProofReplayCache:
    """Proofs seen by this process, forgotten once expired; past ``max_entries`` live proofs, new ones
    are refused as unverifiable (``StoreUnavailable``) rather than let through unchecked."""

    def __init__(self, clock: Clock, max_entries: int = MAX_MEMORY_ENTRIES) -> None:
        self._clock = clock
        self._max = max_entries
        self._expiry: dict[str, int] = {}
        self._queue: list[tuple[int, str]] = []
        self._lock = threading.Lock()

    def first_use(self, jkt: str, jti: str, expires_at: int) -> bool:
        """Record the proof; ``True`` the first time."""
        key = _key_suffix(jkt, jti)
        now = self._clock.now()
        with self._lock:
            while self._queue and self._queue[0][0] <= now:
                _, old = heapq.heappop(self._queue)
                if self._expiry.get(old, now + 1) <= now:
                    del self._expiry[old]
            if self._expiry.get(key, now) > now:
                return False
            if len(self._expiry) >= self._max:
                raise StoreUnavailable(message="too many DPoP proofs to remember: retry shortly")
            self._expiry[key] = expires_at
            heapq.heappush(self._queue, (expires_at, key))
            return True


class RedisProofReplayCache:
    """Proofs seen by any process: one ``SET key 1 NX EXAT expires_at`` per proof (a single key, so one
    atomic command on a cluster too)."""

    def __init__(self, client: redis.Redis | RedisCluster, prefix: str) -> None:
        self._client = client
        self._prefix = prefix

    def first_use(self, jkt: str, jti: str, expires_at: int) -> bool:
        """Record the proof; ``True`` the first time. ``StoreUnavailable`` when Redis does not answer."""
        try:
            created = self._client.set(
                f"{self._prefix}:dpop:{_key_suffix(jkt, jti)}", 1, nx=True, exat=expires_at
            )
        except (RedisError, RedisClusterException, OSError) as error:
            raise StoreUnavailable() from error
        return bool(created)
