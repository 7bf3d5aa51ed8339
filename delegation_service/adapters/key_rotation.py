"""Automatic rotation of our signing keys: the rotator that follows the schedule over the key directory,
and the signer and verifier that switch keys while the process serves.

The schedule (:mod:`delegation_service.domain.rotation`) says which key signs; this module applies it.
Each process runs one :class:`KeyRotator`: it reads the shared directory, creates the next key when it is
due (one process wins each generation, see :mod:`.key_directory`), removes keys long retired, and installs
a :class:`KeySnapshot` into the :class:`RotatingSigner` and :class:`RotatingVerifier`. It wakes at the
next change of the schedule and at least every ``reread_seconds`` (to learn of keys another process made).

The signer picks its key by the wall clock at each signature, among the keys of its snapshot: a pending
key starts signing at its activation time exactly, however late the rotator thread wakes. So the old key
signs nothing after the moment its retirement is counted from, and the schedule's guarantees hold to
the signature rather than to the rotator's wake-up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from delegation_service.adapters.jwt_codec import JwtSigner, JwtVerifier
from delegation_service.adapters.key_directory import KeyDirectory, KeyDirectoryError, StoredKey
from delegation_service.adapters.keys import KeySet, SigningKey
from delegation_service.domain.rotation import (
    KeyState,
    KeyTimeline,
    RotationPolicy,
    Schedule,
    active_at,
    schedule,
)
from delegation_service.domain.tokens import ChildToken, VerifiedToken

log = logging.getLogger(__name__)

MIN_WAIT_SECONDS = 0.01
"""The shortest sleep between two runs of the rotator (no busy loop on a time just passed)."""
MAX_CREATE_ATTEMPTS = 3
"""Creations tried in one run: one normally; a lost race reads the winner's key instead."""


@dataclass(frozen=True)
class KeySnapshot:
    """The published keys at one moment, and the signers of the active and pending ones."""

    schedule: Schedule
    key_set: KeySet
    """Active (signing at :attr:`Schedule.at`), next (pending) and previous (retiring) keys."""
    signers: tuple[tuple[KeyTimeline, JwtSigner], ...]
    """The active and pending keys' signers, in generation order, with their timelines."""

    @classmethod
    def of(cls, current: Schedule, keys: Sequence[StoredKey]) -> KeySnapshot:
        """The snapshot of ``current`` over the parsed ``keys`` (those the schedule names)."""
        by_kid: dict[str, SigningKey] = {stored.key.kid: stored.key for stored in keys}
        active = current.active
        if active is None:
            raise ValueError("no signing key")
        pending = [t for t in current.keys if t.state is KeyState.PENDING]
        retiring = [t for t in current.keys if t.state is KeyState.RETIRING]
        key_set = KeySet(
            by_kid[active.key.kid],
            previous=[by_kid[t.key.kid] for t in reversed(retiring)],
            next_keys=[by_kid[t.key.kid] for t in pending],
        )
        signers = tuple((t, JwtSigner(KeySet(by_kid[t.key.kid]))) for t in (active, *pending))
        return cls(current, key_set, signers)

    def signer_at(self, t: float) -> JwtSigner:
        """The signer of the key that signs at ``t``."""
        chosen = active_at([timeline for timeline, _ in self.signers], t)
        return next(signer for timeline, signer in self.signers if timeline is chosen)


class RotatingSigner:
    """A :class:`~delegation_service.domain.ports.TokenSigner` whose keys the rotator replaces."""

    def __init__(self, snapshot: KeySnapshot, clock: Callable[[], float] = time.time) -> None:
        self._snapshot = snapshot
        self._clock = clock
        self._jwks: dict[str, list[dict[str, str]]] = snapshot.key_set.jwks()

    def install(self, snapshot: KeySnapshot) -> None:
        """Sign with ``snapshot``'s keys from now on, and publish them."""
        jwks = snapshot.key_set.jwks()
        self._snapshot, self._jwks = snapshot, jwks  # one assignment: a reader sees one or the other

    def sign(self, child: ChildToken) -> str:
        """The compact JWS of ``child``, signed by the key that is active now."""
        return self._snapshot.signer_at(self._clock()).sign(child)

    def jwks(self) -> Mapping[str, object]:
        """The pending, active and retiring keys (never any private member)."""
        return self._jwks

    @property
    def keys(self) -> KeySet:
        """The published key set of the current snapshot."""
        return self._snapshot.key_set


class RotatingVerifier:
    """A :class:`~delegation_service.domain.ports.TokenVerifier` rebuilt over each new own key set.

    :class:`~.jwt_codec.JwtVerifier` takes our keys at construction; building a new one for each
    snapshot (cheap: a signature check per key, the trusted issuers kept as they are) keeps it untouched
    by rotation.
    """

    def __init__(self, build: Callable[[KeySet], JwtVerifier], keys: KeySet) -> None:
        self._build = build
        self._inner = build(keys)
        self._installed = 0

    def install(self, keys: KeySet) -> None:
        """Verify with ``keys`` (published ones only: a retired key verifies nothing) from now on."""
        self._inner = self._build(keys)
        self._installed += 1

    def verify(self, raw_token: str) -> VerifiedToken:
        """Verify with the current keys (see :class:`JwtVerifier`)."""
        return self._inner.verify(raw_token)

    @property
    def key_generation(self) -> int:
        """Changes whenever our keys or a trusted issuer's change (verified-token caches start over)."""
        return self._inner.key_generation + self._installed


class KeyRotator:
    """Follows the rotation schedule over a key directory, in the background once started."""

    def __init__(
        self,
        directory: KeyDirectory,
        policy: RotationPolicy,
        algorithm: str,
        install: Callable[[KeySnapshot], None] = lambda snapshot: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._directory = directory
        self._policy = policy
        self._algorithm = algorithm
        self.install = install
        """Called with each new snapshot (the signer and verifier take it)."""
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        self.snapshot: KeySnapshot | None = None

    @property
    def policy(self) -> RotationPolicy:
        """The rotation policy followed."""
        return self._policy

    def step(self) -> KeySnapshot:
        """Read the directory, create the next key if it is due, remove long-retired keys, install the
        snapshot if it changed. Raises :class:`KeyDirectoryError` when the directory fails."""
        self._directory.ensure()
        stored, current = self._read()
        for _ in range(MAX_CREATE_ATTEMPTS):
            if current.next_due_at > current.at:
                break
            generation = stored[-1].record.generation + 1 if stored else 0
            won = self._directory.create(generation, self._algorithm)
            log.info(
                "signing key created" if won else "signing key created by another process",
                extra={"event": "signing_key_created", "generation": generation, "won": won},
            )
            stored, current = self._read()
        # Removed a publish-ahead after retirement: a process whose clock runs a little behind still has
        # it as retiring, and must not lose a key that verifies tokens it considers valid.
        expired = [
            key
            for timeline, key in zip(current.keys, stored, strict=True)
            if timeline.state is KeyState.RETIRED
            and timeline.retires_at is not None
            and current.at >= timeline.retires_at + self._policy.publish_ahead
        ]
        for key in expired:
            self._directory.remove(key)
            log.info(
                "retired signing key removed", extra={"event": "signing_key_removed", "kid": key.key.kid}
            )
        if expired:
            stored, current = self._read()
        snapshot = KeySnapshot.of(current, stored)
        previous = self.snapshot
        if previous is None or _states(previous) != _states(snapshot):
            self.install(snapshot)
            log.info(
                "signing keys",
                extra={"event": "signing_keys", "keys": {t.key.kid: t.state.value for t in current.keys}},
            )
        self.snapshot = snapshot
        return snapshot

    def _read(self) -> tuple[list[StoredKey], Schedule]:
        stored = self._directory.load()
        return stored, schedule([key.record for key in stored], self._policy, self._clock())

    def start(self) -> None:
        """Run :meth:`step` in the background until :meth:`stop`."""
        self._thread = threading.Thread(target=self._run, name="key-rotator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the background thread (waits for a run in progress, bounded)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._wait_seconds()):
            try:
                self.step()
            except (KeyDirectoryError, OSError, ValueError) as error:
                # Keep signing with the last snapshot: its current key stays valid, a pending one still
                # activates on time; only the next creation waits for the directory to work again.
                if not self._failing:
                    log.error(
                        "key directory failed", extra={"event": "key_directory_failed", "error": str(error)}
                    )
                self._failing = True
            else:
                if self._failing:
                    log.info("key directory works again", extra={"event": "key_directory_recovered"})
                self._failing = False

    def _wait_seconds(self) -> float:
        if self.snapshot is None:
            return MIN_WAIT_SECONDS
        until_change = self.snapshot.schedule.next_change_at() - self._clock()
        return max(MIN_WAIT_SECONDS, min(until_change, self._policy.reread_seconds))


def _states(snapshot: KeySnapshot) -> list[tuple[str, KeyState, float]]:
    return [(t.key.kid, t.state, t.activates_at) for t in snapshot.schedule.keys]
