"""The edge's local revocation mirror and its staleness: plain Python, no gRPC.

The mirror holds what the revocation stream said is in force: revoked tokens and chains, and subject and
client horizons. A verified child is judged with the domain's own rule (:func:`state_of` and
:meth:`TokenRecord.horizon_checks`), so the edge applies the horizons exactly as the service does.

One difference is forced on the edge: the service compares the subject horizon and the root client's
horizon with the *root's* issue time, which only its store knows; the child carries its own ``iat``
only. The edge compares them with the child's ``iat`` instead, and that loses nothing: a child is never
older than its root, and a child issued after a horizon from a root issued at or before it cannot exist
(minting reads the root's state in the same atomic step and refuses a revoked root).

Revocations never un-happen, so the mirror only grows (by merging) and shrinks by expiry: a resync from
a snapshot merges into what is held instead of replacing it, and the edge never forgets a revocation
still in force while it resynchronises.
"""

from __future__ import annotations

import threading

from delegation_service.domain.ports import RevocationEvent
from delegation_service.domain.revocation import (
    HorizonKey,
    HorizonKind,
    RevocationKind,
    StateSnapshot,
    TokenState,
    record_of,
    state_of,
)
from delegation_service.domain.tokens import VerifiedToken


class RevocationMirror:
    """Revocations in force, by token, chain, subject and client; safe to share between threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, int] = {}  # token id -> when the entry stops mattering
        self._chains: dict[str, int] = {}
        self._horizons: dict[HorizonKey, tuple[int, int]] = {}  # key -> (horizon, expires_at)

    def apply(self, revocation: RevocationEvent) -> None:
        """Record one revocation; a later horizon replaces an earlier one (horizons only move on)."""
        with self._lock:
            if revocation.kind is RevocationKind.TOKEN:
                _keep_longest(self._tokens, revocation.token_id, revocation.expires_at)
            elif revocation.kind is RevocationKind.CHAIN:
                _keep_longest(self._chains, revocation.chain_id, revocation.expires_at)
            else:
                subject = revocation.kind is RevocationKind.SUBJECT
                key = HorizonKey(
                    HorizonKind.SUBJECT if subject else HorizonKind.CLIENT,
                    revocation.subject if subject else revocation.client_id,
                )
                held = self._horizons.get(key)
                if held is None or revocation.revoked_at >= held[0]:
                    expires = max(revocation.expires_at, held[1] if held else 0)
                    self._horizons[key] = (revocation.revoked_at, expires)

    def state(self, token: VerifiedToken, now: int) -> TokenState:
        """The state of a verified child token as far as the mirror knows (ACTIVE, REVOKED, EXPIRED)."""
        # The child's iat stands for its root's (record_of): the module docstring says why no revoked
        # child escapes.
        record = record_of(token)
        with self._lock:
            horizons = {key: self._horizons[key][0] for key in record.horizon_keys() if key in self._horizons}
            snapshot = StateSnapshot(
                record=record,
                token_revoked=token.token_id in self._tokens,
                chain_revoked=token.chain_id in self._chains,
                horizons=horizons,
            )
        return state_of(record, snapshot, now)

    def prune(self, now: int) -> int:
        """Drop entries every covered token of which has expired; return how many were dropped.

        An entry without an expiry (0) is kept: forgetting a revocation too early would let a token back.
        """
        with self._lock:
            dropped = 0
            for entries in (self._tokens, self._chains):
                expired = [key for key, expires in entries.items() if 0 < expires <= now]
                for key in expired:
                    del entries[key]
                dropped += len(expired)
            gone_horizons = [key for key, (_, expires) in self._horizons.items() if 0 < expires <= now]
            for horizon in gone_horizons:
                del self._horizons[horizon]
            return dropped + len(gone_horizons)

    def __len__(self) -> int:
        with self._lock:
            return len(self._tokens) + len(self._chains) + len(self._horizons)


def _keep_longest(entries: dict[str, int], key: str, expires_at: int) -> None:
    if key:
        entries[key] = max(expires_at, entries.get(key, 0))


class FeedClock:
    """How stale the mirror is: the time since the feed was last known current (monotonic seconds).

    The feed is current when the stream has told it it holds every revocation up to now: at the end of a
    snapshot, on a heartbeat, or on a revocation received while following. Before the first such point
    the mirror has never been current and its staleness is infinite.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current_at: float | None = None

    def mark_current(self, monotonic_now: float) -> None:
        """The feed was known current at ``monotonic_now``."""
        with self._lock:
            if self._current_at is None or monotonic_now > self._current_at:
                self._current_at = monotonic_now

    def staleness(self, monotonic_now: float) -> float:
        """Seconds since the feed was last known current; ``inf`` if it never was."""
        with self._lock:
            if self._current_at is None:
                return float("inf")
            return max(0.0, monotonic_now - self._current_at)
