"""The signing-key rotation schedule: which of our keys is pending, active, retiring or retired at a time.

Pure: given each key's generation and creation time, the rotation interval, how long a key is published
before it signs (publish-ahead) and how long a token it signed can still be presented (the longest child
lifetime plus the clock leeway), the state of every key at time ``t`` follows, with no clock, file or
process involved. Every process that reads the same keys computes the same states.

The rules, for keys sorted by generation:

- A key **activates** ``publish_ahead`` after its creation, and never before the key before it (a clock
  that steps back must not reorder the keys). Generation 0 activates at its creation: nothing else could
  sign before it (a fresh deployment). While no key has activated (a key dated in this reader's future,
  or older keys deleted by hand), the lowest generation signs: there must always be a signing key.
- Before its activation a key is **pending**: published, it verifies, it does not sign. A verifier whose
  cached JWKS is at most ``publish_ahead`` old therefore holds a key before any token carries its kid.
- From its activation until the next key's, it is **active**: it signs.
- Then it is **retiring** for ``longest_lifetime``: still published and verifying what it signed.
- Then it is **retired**: no token it signed is still valid; it is neither published nor trusted.
- The next key is due ``interval - publish_ahead`` after the newest key's activation, so that it signs
  ``interval`` after the newest one did. A service that was down past that time creates it when it comes
  back; the current key signs on until the new one has been published for ``publish_ahead``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass


class KeyState(enum.Enum):
    """Where a key stands in its life."""

    PENDING = "pending"
    """Published ahead of use; verifies, does not sign yet."""
    ACTIVE = "active"
    """Signs new tokens (exactly one key at any time)."""
    RETIRING = "retiring"
    """Signed earlier; published and verifying until every token it signed has expired."""
    RETIRED = "retired"
    """Neither published nor trusted: every token it signed has expired."""


PUBLISHED_STATES = frozenset({KeyState.PENDING, KeyState.ACTIVE, KeyState.RETIRING})
"""The states whose keys are in the JWKS and verify tokens."""


@dataclass(frozen=True)
class RotationPolicy:
    """How keys rotate: every ``interval`` seconds, each published ``publish_ahead`` seconds before it
    signs and kept ``longest_lifetime`` seconds (the longest child lifetime plus leeway) after it stops."""

    interval: float
    publish_ahead: float
    longest_lifetime: float

    def __post_init__(self) -> None:
        if not 0 < self.publish_ahead < self.interval:
            raise ValueError("publish_ahead must be positive and shorter than the interval")
        if self.longest_lifetime < 0:
            raise ValueError("longest_lifetime must not be negative")

    @property
    def reread_seconds(self) -> float:
        """How often each process reads the shared keys again, to learn of a key another one created:
        a tenth of the publish-ahead time, at most 30 s."""
        return min(self.publish_ahead / 10, 30.0)

    @property
    def max_cache_seconds(self) -> float:
        """The longest a verifier may cache our JWKS and still hold every key before it signs.

        A key is created ``publish_ahead`` before it signs; every process has read it within
        :attr:`reread_seconds`, so a cache fetched just before that expires in time when it lives no
        longer than the rest of the publish-ahead time.
        """
        return self.publish_ahead - self.reread_seconds


@dataclass(frozen=True, order=True)
class KeyRecord:
    """One key as the schedule sees it: its generation (its place in the sequence), creation time, kid."""

    generation: int
    created_at: float
    kid: str


@dataclass(frozen=True)
class KeyTimeline:
    """One key's place in the schedule: when it signs, stops signing and retires, and its state at ``at``."""

    key: KeyRecord
    activates_at: float
    superseded_at: float | None
    """When the next key activates (``None``: no next key yet)."""
    retires_at: float | None
    state: KeyState


@dataclass(frozen=True)
class Schedule:
    """Every key's timeline at one moment, and when the next key is due."""

    at: float
    keys: tuple[KeyTimeline, ...]
    """In generation order."""
    next_due_at: float
    """When the next key should be created (now or earlier: create it at once)."""

    @property
    def active(self) -> KeyTimeline | None:
        """The key that signs at :attr:`at` (``None`` only for an empty key set)."""
        return next((k for k in self.keys if k.state is KeyState.ACTIVE), None)

    def published(self) -> tuple[KeyTimeline, ...]:
        """The keys in the JWKS at :attr:`at`: pending, active and retiring."""
        return tuple(k for k in self.keys if k.state in PUBLISHED_STATES)

    def next_change_at(self) -> float:
        """The earliest time after :attr:`at` when a state changes or the next key is due."""
        moments = [self.next_due_at]
        for key in self.keys:
            for moment in (key.activates_at, key.retires_at):
                if moment is not None and moment > self.at:
                    moments.append(moment)
        return min(moments)

    def signing_at(self, t: float) -> KeyTimeline | None:
        """The key that signs at ``t`` among these keys (``t`` may be later than :attr:`at`)."""
        return active_at(self.keys, t)


def active_at(timelines: Sequence[KeyTimeline], t: float) -> KeyTimeline | None:
    """The key of ``timelines`` (generation order) that signs at ``t``: the last one activated by then,
    else (a key created in this reader's future, by a clock ahead of ours) the first one."""
    chosen = None
    for timeline in timelines:
        if timeline.activates_at <= t:
            chosen = timeline
    return chosen if chosen is not None else (timelines[0] if timelines else None)


def schedule(keys: Sequence[KeyRecord], policy: RotationPolicy, at: float) -> Schedule:
    """The state of every key at time ``at``, and when the next key is due.

    Two records of one generation are a bug of the caller (the key directory keeps one per generation).
    """
    ordered = sorted(keys)
    if len({key.generation for key in ordered}) != len(ordered):
        raise ValueError("one key per generation")
    activations: list[float] = []
    for index, key in enumerate(ordered):
        published_since = key.created_at if key.generation == 0 else key.created_at + policy.publish_ahead
        activates = published_since if index == 0 else max(published_since, activations[-1])
        activations.append(activates)
    plain: list[KeyTimeline] = []
    for index, key in enumerate(ordered):
        superseded = activations[index + 1] if index + 1 < len(ordered) else None
        retires = None if superseded is None else superseded + policy.longest_lifetime
        plain.append(KeyTimeline(key, activations[index], superseded, retires, KeyState.PENDING))
    signing = active_at(plain, at)
    timelines = tuple(
        KeyTimeline(t.key, t.activates_at, t.superseded_at, t.retires_at, _state(t, at, t is signing))
        for t in plain
    )
    next_due = at if not ordered else activations[-1] + policy.interval - policy.publish_ahead
    return Schedule(at, timelines, next_due)


def _state(timeline: KeyTimeline, at: float, signing: bool) -> KeyState:
    if signing:
        return KeyState.ACTIVE
    if timeline.superseded_at is None or at < timeline.superseded_at:
        return KeyState.PENDING
    if timeline.retires_at is not None and at < timeline.retires_at:
        return KeyState.RETIRING
    return KeyState.RETIRED
