"""The token registry in process memory, for the dev server and tests (SPEC §5, §7).

It keeps the same model as the Redis registry: records per chain, one marker per revoked chain or
token, one horizon per subject or client, and a bounded log of revocation events. Every entry has an
expiry taken from the token it describes; expired entries are invisible at once and are purged lazily,
on writes, from a heap ordered by expiry, so memory stays bounded under any load.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import deque
from collections.abc import Sequence

from delegation_service.domain.errors import CursorExpired, InvalidRequest
from delegation_service.domain.ports import ChainRevocation, Clock, MintOutcome, RevocationEvent
from delegation_service.domain.revocation import (
    ChainSnapshot,
    HorizonKey,
    HorizonKind,
    RevocationKind,
    StateSnapshot,
    TokenRecord,
    lineage_problem,
    root_is_active,
)
from delegation_service.domain.tokens import TokenKind

# What a heap entry points at: ("record", chain, token), ("chain", chain, ""), ("token", chain, token)
# or a horizon key.
_Entry = tuple[str, str, str] | HorizonKey


class MemoryRegistry:
    """A :class:`~delegation_service.domain.ports.TokenRegistry` in one process, guarded by one lock.

    ``clock`` decides expiry. Records and markers live until their token's expiry plus
    ``leeway_seconds``; horizons for ``horizon_retention_seconds`` after the horizon (which must outlast
    the longest-lived token a horizon can cover); events for ``event_retention_seconds``.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        horizon_retention_seconds: int = 86_400,
        event_retention_seconds: int = 86_400,
        leeway_seconds: int = 0,
    ) -> None:
        if leeway_seconds < 0 or horizon_retention_seconds <= 0 or event_retention_seconds <= 0:
            raise ValueError("the leeway must be >= 0 and the retentions > 0")
        self._clock = clock
        self._horizon_retention = horizon_retention_seconds
        self._event_retention = event_retention_seconds
        self._leeway = leeway_seconds
        self._lock = threading.Lock()
        # chain id -> token id -> record; a record lives until its expires_at + leeway.
        self._chains: dict[str, dict[str, TokenRecord]] = {}
        # Revocation markers: chain id -> until, (chain id, token id) -> until.
        self._chain_markers: dict[str, int] = {}
        self._token_markers: dict[tuple[str, str], int] = {}
        # horizon -> (horizon time, until).
        self._horizons: dict[HorizonKey, tuple[int, int]] = {}
        # (sequence, until, event), oldest first; the sequence is the cursor.
        self._events: deque[tuple[int, int, RevocationEvent]] = deque()
        self._next_sequence = 1
        # (until, tie-breaker, entry): extending an entry pushes a new item; stale items are skipped.
        self._expiries: list[tuple[int, int, _Entry]] = []
        self._tie_breaker = itertools.count()

    # -- the port -----------------------------------------------------------------------------------------

    def snapshot(self, expected: TokenRecord) -> StateSnapshot:
        """The record, markers and horizons that decide ``expected``'s state, read under the lock."""
        with self._lock:
            return self._snapshot(expected, self._clock.now())

    def mint(self, root: TokenRecord, child: TokenRecord) -> MintOutcome:
        """Judge ``root`` and record ``child`` (and ``root`` unless known) under the lock, if it is active."""
        problem = lineage_problem(root, child)
        if problem is not None:
            raise ValueError(problem)
        with self._lock:
            now = self._clock.now()
            self._purge(now)
            snapshot = self._snapshot(root, now)
            if not root_is_active(root, snapshot, now):
                return MintOutcome(snapshot, recorded=False)
            records = self._chains.setdefault(child.chain_id, {})
            if snapshot.record is None:
                self._store_record(records, root, now)
            self._store_record(records, child, now)
            if not records:
                # Both were already expired: leave no empty chain behind.
                del self._chains[child.chain_id]
            return MintOutcome(snapshot, recorded=True)

    def revoke_token(self, chain_id: str, token_id: str, expires_at: int, now: int) -> RevocationEvent:
        """Mark one token revoked until ``expires_at`` (plus leeway); idempotent, never shortened."""
        with self._lock:
            self._purge(self._clock.now())
            # After the purge every stored marker is alive: keep the later of the two expiries.
            key = (chain_id, token_id)
            until = max(expires_at + self._leeway, self._token_markers.get(key, expires_at + self._leeway))
            self._token_markers[key] = until
            self._expire_at(until, ("token", chain_id, token_id))
            return self._publish(
                RevocationKind.TOKEN,
                chain_id=chain_id,
                token_id=token_id,
                revoked_at=now,
                expires_at=expires_at,
            )

    def revoke_chain(self, chain_id: str, expires_at: int, now: int) -> RevocationEvent:
        """Mark a chain revoked until ``expires_at`` (plus leeway): one entry, whatever its size."""
        with self._lock:
            self._purge(self._clock.now())
            until = max(
                expires_at + self._leeway, self._chain_markers.get(chain_id, expires_at + self._leeway)
            )
            self._chain_markers[chain_id] = until
            self._expire_at(until, ("chain", chain_id, ""))
            return self._publish(
                RevocationKind.CHAIN, chain_id=chain_id, revoked_at=now, expires_at=expires_at
            )

    def revoke_known_chain(self, chain_id: str, now: int, *, dry_run: bool = False) -> ChainRevocation | None:
        """Mark a known chain revoked until its root's expiry (plus leeway) and report the blast radius.

        Counting walks the chain's records: this store is for development and tests, where chains are
        small; the Redis store counts in constant time.
        """
        with self._lock:
            current = self._clock.now()
            self._purge(current)
            records = self._chains.get(chain_id, {}).values()
            already_revoked = self._alive(self._chain_markers.get(chain_id), current)
            if not records and not already_revoked:
                return None
            unexpired = [record for record in records if record.expires_at > current]
            clients = tuple(sorted({record.client_id for record in unexpired if record.client_id}))
            root = next((r for r in records if r.kind is TokenKind.UPSTREAM), None)
            expires_at = root.expires_at if root is not None else current + self._horizon_retention
            event = None
            if not dry_run:
                until = max(expires_at + self._leeway, self._chain_markers.get(chain_id, 0))
                self._chain_markers[chain_id] = until
                self._expire_at(until, ("chain", chain_id, ""))
                event = self._publish(
                    RevocationKind.CHAIN, chain_id=chain_id, revoked_at=now, expires_at=expires_at
                )
            return ChainRevocation(already_revoked, len(unexpired), clients, event)

    def revoke_horizon(self, key: HorizonKey, at: int, now: int) -> RevocationEvent:
        """Move the horizon to ``at`` unless it is already later; the event carries the horizon in force."""
        with self._lock:
            self._purge(self._clock.now())
            # After the purge a stored horizon is alive. A horizon never moves back, nor its expiry.
            effective, until = at, at + self._horizon_retention
            current = self._horizons.get(key)
            if current is not None:
                effective, until = max(at, current[0]), max(until, current[1])
            self._horizons[key] = (effective, until)
            self._expire_at(until, key)
            return self._publish(
                key.kind.revocation_kind,
                subject=key.value if key.kind is HorizonKind.SUBJECT else "",
                client_id=key.value if key.kind is HorizonKind.CLIENT else "",
                revoked_at=effective,
                expires_at=effective + self._horizon_retention,
            )

    def record(self, chain_id: str, token_id: str) -> TokenRecord | None:
        """The live record of ``token_id`` in ``chain_id``."""
        with self._lock:
            return self._live_record(chain_id, token_id, self._clock.now())

    def chain(self, chain_id: str, limit: int) -> ChainSnapshot | None:
        """Up to ``limit`` live records (the root, then the children expiring last), markers and horizons;
        ``None`` when nothing of the chain is alive."""
        with self._lock:
            now = self._clock.now()
            live = [
                record
                for record in self._chains.get(chain_id, {}).values()
                if self._alive(record.expires_at + self._leeway, now)
            ]
            chain_revoked = self._alive(self._chain_markers.get(chain_id), now)
            if not live and not chain_revoked:
                return None
            live.sort(key=lambda r: (r.kind is not TokenKind.UPSTREAM, -r.expires_at, r.token_id))
            records = tuple(live[: max(limit, 0)])
            horizon_keys = tuple(dict.fromkeys(key for record in records for key in record.horizon_keys()))
            return ChainSnapshot(
                chain_id=chain_id,
                records=records,
                chain_revoked=chain_revoked,
                revoked_token_ids=frozenset(
                    record.token_id
                    for record in records
                    if self._alive(self._token_markers.get((chain_id, record.token_id)), now)
                ),
                horizons=self._live_horizons(horizon_keys, now),
            )

    def events(self, after: str | None, limit: int) -> Sequence[RevocationEvent]:
        """Up to ``limit`` retained events after cursor ``after``, oldest first.

        Raises :class:`~delegation_service.domain.errors.InvalidRequest` for a cursor this store never
        gave out, and :class:`~delegation_service.domain.errors.CursorExpired` when the cursor's event
        is no longer retained.
        """
        if after and not (after.isascii() and after.isdigit()):
            raise InvalidRequest(message="the revocation cursor is malformed")
        start = int(after) if after else 0
        if limit <= 0:
            return []
        with self._lock:
            now = self._clock.now()
            self._purge(now)
            if after and (not self._events or start < self._events[0][0]):
                # The cursor's own event is gone (oldest first), so later ones may be too.
                raise CursorExpired()
            found: list[RevocationEvent] = []
            for sequence, until, event in self._events:
                if sequence > start and self._alive(until, now):
                    found.append(event)
                    if len(found) == limit:
                        break
            return found

    def ping(self) -> bool:
        """Always ``True``: the store is this process."""
        return True

    # -- helpers ----------------------------------------------------------------------------------------

    def _snapshot(self, expected: TokenRecord, now: int) -> StateSnapshot:
        return StateSnapshot(
            record=self._live_record(expected.chain_id, expected.token_id, now),
            token_revoked=self._alive(self._token_markers.get((expected.chain_id, expected.token_id)), now),
            chain_revoked=self._alive(self._chain_markers.get(expected.chain_id), now),
            horizons=self._live_horizons(expected.horizon_keys(), now),
        )

    @staticmethod
    def _alive(until: int | None, now: int) -> bool:
        return until is not None and now < until

    def _live_record(self, chain_id: str, token_id: str, now: int) -> TokenRecord | None:
        record = self._chains.get(chain_id, {}).get(token_id)
        if record is None or not self._alive(record.expires_at + self._leeway, now):
            return None
        return record

    def _live_horizons(self, keys: Sequence[HorizonKey], now: int) -> dict[HorizonKey, int]:
        live: dict[HorizonKey, int] = {}
        for key in keys:
            stored = self._horizons.get(key)
            if stored is not None and self._alive(stored[1], now):
                live[key] = stored[0]
        return live

    def _store_record(self, records: dict[str, TokenRecord], record: TokenRecord, now: int) -> None:
        until = record.expires_at + self._leeway
        if not self._alive(until, now):
            # Recording an expired token would only create garbage (Redis drops such a write too).
            return
        records[record.token_id] = record
        self._expire_at(until, ("record", record.chain_id, record.token_id))

    def _publish(
        self,
        kind: RevocationKind,
        *,
        chain_id: str = "",
        token_id: str = "",
        subject: str = "",
        client_id: str = "",
        revoked_at: int,
        expires_at: int,
    ) -> RevocationEvent:
        sequence = self._next_sequence
        self._next_sequence += 1
        event = RevocationEvent(
            str(sequence), kind, chain_id, token_id, subject, client_id, revoked_at, expires_at
        )
        self._events.append((sequence, self._clock.now() + self._event_retention, event))
        return event

    def _expire_at(self, until: int, entry: _Entry) -> None:
        heapq.heappush(self._expiries, (until, next(self._tie_breaker), entry))

    def _purge(self, now: int) -> None:
        """Drop every entry whose expiry has passed; amortised O(log n) per entry ever written."""
        while self._events and not self._alive(self._events[0][1], now):
            self._events.popleft()
        while self._expiries and not self._alive(self._expiries[0][0], now):
            _, _, entry = heapq.heappop(self._expiries)
            self._drop_if_expired(entry, now)

    def _drop_if_expired(self, entry: _Entry, now: int) -> None:
        # The entry may have been extended or rewritten since this heap item was pushed: check its
        # current expiry before dropping it.
        if isinstance(entry, HorizonKey):
            horizon = self._horizons.get(entry)
            if horizon is not None and not self._alive(horizon[1], now):
                del self._horizons[entry]
            return
        kind, chain_id, token_id = entry
        if kind == "chain":
            if not self._alive(self._chain_markers.get(chain_id), now):
                self._chain_markers.pop(chain_id, None)
        elif kind == "token":
            if not self._alive(self._token_markers.get((chain_id, token_id)), now):
                self._token_markers.pop((chain_id, token_id), None)
        else:
            records = self._chains.get(chain_id, {})
            record = records.get(token_id)
            if record is not None and not self._alive(record.expires_at + self._leeway, now):
                del records[token_id]
                if not records:
                    del self._chains[chain_id]


__all__ = ["MemoryRegistry"]
