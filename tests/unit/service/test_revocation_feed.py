"""The shared revocation feed, over the in-memory registry (the same contract as Redis, tests/contract).

One follower reads the log for every stream; a stream catches up from the store itself only when it
must (snapshot, old cursor, fallen behind the buffer), and never misses or repeats an event.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import pytest

from delegation_service.adapters.memory_registry import MemoryRegistry
from delegation_service.domain.errors import CursorExpired, TooManyStreams
from delegation_service.domain.ports import RevocationEvent
from delegation_service.domain.revocation import HorizonKey, HorizonKind
from delegation_service.revocation_feed import (
    HEARTBEAT_BOUNDS,
    Marker,
    MarkerType,
    RevocationFeed,
    Subscription,
)

POLL = 0.01
WAIT_SECONDS = 10.0


class Clock:
    def __init__(self) -> None:
        self.value = 1_800_000_000

    def now(self) -> int:
        return self.value


class CountingLog:
    """A real in-memory registry that counts the log reads of the streams and of the shared follower."""

    def __init__(self, registry: MemoryRegistry) -> None:
        self.registry = registry
        self.stream_reads = 0
        self.follower_reads = 0
        self._lock = threading.Lock()

    def events(self, after: str | None, limit: int) -> Sequence[RevocationEvent]:
        with self._lock:
            if threading.current_thread().name == "revocation-feed":
                self.follower_reads += 1
            else:
                self.stream_reads += 1
        return self.registry.events(after, limit)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def registry(clock: Clock) -> MemoryRegistry:
    return MemoryRegistry(clock)


def revoke_subjects(registry: MemoryRegistry, clock: Clock, names: Sequence[str]) -> list[RevocationEvent]:
    now = clock.now()
    return [registry.revoke_horizon(HorizonKey(HorizonKind.SUBJECT, name), now, now) for name in names]


def running(feed: RevocationFeed) -> Iterator[RevocationFeed]:
    feed.start()
    try:
        yield feed
    finally:
        feed.stop()


def take(stream: Iterator[RevocationEvent | Marker], count: int) -> list[RevocationEvent | Marker]:
    return list(itertools.islice(stream, count))


def test_a_stream_gets_the_retained_events_then_the_new_ones_in_order(
    registry: MemoryRegistry, clock: Clock
) -> None:
    old = revoke_subjects(registry, clock, ["a", "b"])
    feed = RevocationFeed(registry, clock, max_streams=4, poll_seconds=POLL)
    for _ in running(feed):
        stream = feed.subscribe(Subscription(None), lambda: True)
        assert take(stream, 2) == old
        new = revoke_subjects(registry, clock, ["c"])
        assert take(stream, 1) == new


def test_many_streams_share_one_follower(registry: MemoryRegistry, clock: Clock) -> None:
    log = CountingLog(registry)
    feed = RevocationFeed(log, clock, max_streams=64, poll_seconds=POLL)
    for _ in running(feed):
        streams = [feed.subscribe(Subscription(None, include_snapshot=True), lambda: True) for _ in range(64)]
        for stream in streams:
            assert take(stream, 1) == [Marker(MarkerType.SNAPSHOT_COMPLETE, "", clock.now())]
        published = revoke_subjects(registry, clock, [f"s{i}" for i in range(10)])
        for stream in streams:
            assert take(stream, 10) == published
        # Each stream read the store only to catch up at its start (twice: to the end, then once more
        # to join the feed); the 640 events came from the follower's buffer.
        assert log.stream_reads <= 2 * 64


def test_past_the_cap_a_stream_is_refused_and_a_closed_one_frees_its_slot(
    registry: MemoryRegistry, clock: Clock
) -> None:
    feed = RevocationFeed(registry, clock, max_streams=2, poll_seconds=POLL)
    for _ in running(feed):
        heartbeats = Subscription(None, heartbeat_seconds=HEARTBEAT_BOUNDS[0])
        first, second = (feed.subscribe(heartbeats, lambda: True) for _ in range(2))
        next(first), next(second)  # a generator subscribes when first read
        with pytest.raises(TooManyStreams):
            next(feed.subscribe(heartbeats, lambda: True))
        first.close()
        assert feed.open_streams == 1
        assert isinstance(next(feed.subscribe(heartbeats, lambda: True)), Marker)


def test_a_stream_behind_the_buffer_catches_up_from_the_store_without_a_gap(
    registry: MemoryRegistry, clock: Clock
) -> None:
    feed = RevocationFeed(registry, clock, max_streams=2, poll_seconds=POLL, buffer_size=5)
    for _ in running(feed):
        stream = feed.subscribe(Subscription(None, heartbeat_seconds=1), lambda: True)
        assert take(stream, 1) == [Marker(MarkerType.HEARTBEAT, "", clock.now())]
        published = revoke_subjects(registry, clock, [f"s{i}" for i in range(40)])  # 8 buffers' worth
        assert take(stream, 40) == published


def test_a_cursor_older_than_the_log_is_refused(registry: MemoryRegistry, clock: Clock) -> None:
    old = revoke_subjects(registry, clock, ["a"])
    clock.value += 2 * 86_400  # past the memory store's event retention
    revoke_subjects(registry, clock, ["b"])
    feed = RevocationFeed(registry, clock, max_streams=2, poll_seconds=POLL)
    for _ in running(feed):
        with pytest.raises(CursorExpired):
            next(feed.subscribe(Subscription(old[0].cursor), lambda: True))


def test_heartbeat_intervals_are_brought_within_bounds() -> None:
    low, high = HEARTBEAT_BOUNDS
    assert Subscription(None, heartbeat_seconds=0).heartbeat_seconds == low
    assert Subscription(None, heartbeat_seconds=3600).heartbeat_seconds == high
    assert Subscription(None).heartbeat_seconds is None


def test_a_snapshot_holds_what_was_revoked_before_the_stream_even_if_the_feed_is_a_poll_behind(
    registry: MemoryRegistry, clock: Clock
) -> None:
    feed = RevocationFeed(registry, clock, max_streams=2, poll_seconds=30)  # never polls again in this test
    for _ in running(feed):
        # The first stream makes the follower read the (empty) log; a revocation is acknowledged after.
        stream = feed.subscribe(Subscription(None, heartbeat_seconds=HEARTBEAT_BOUNDS[0]), lambda: True)
        assert isinstance(next(stream), Marker)  # the first stream waits on the follower: it has caught up
        revoked = revoke_subjects(registry, clock, ["late"])
        cold = feed.subscribe(Subscription(None, include_snapshot=True), lambda: True)
        assert take(cold, 2) == [
            *revoked,
            Marker(MarkerType.SNAPSHOT_COMPLETE, revoked[0].cursor, clock.now()),
        ]


def test_a_follower_going_away_wakes_its_own_stream_and_no_other(
    registry: MemoryRegistry, clock: Clock
) -> None:
    """A thousand followers leaving at once must not be a million wake-ups: with one condition shared by
    every stream, each departure woke them all, which held the GIL for seconds and timed out unary
    calls on the same server."""
    count = 20
    checks = [0] * count
    leaving = threading.Event()

    def keep_going(index: int) -> Callable[[], bool]:
        def check() -> bool:
            checks[index] += 1
            return not (index == 0 and leaving.is_set())

        return check

    feed = RevocationFeed(registry, clock, max_streams=count, poll_seconds=POLL)
    feed.start()
    try:
        snapshot = Subscription(None, include_snapshot=True)
        streams = [feed.subscribe(snapshot, keep_going(i)) for i in range(count)]
        for stream in streams:
            assert isinstance(next(stream), Marker)
        readers = [threading.Thread(target=list, args=(stream,), daemon=True) for stream in streams]
        for reader in readers:
            reader.start()
        deadline = time.monotonic() + WAIT_SECONDS
        while feed.waiting_streams < count and time.monotonic() < deadline:
            time.sleep(POLL)
        assert feed.waiting_streams == count
        before = list(checks)
        leaving.set()
        streams[0].wake()
        readers[0].join(WAIT_SECONDS)
        assert not readers[0].is_alive()
        assert feed.open_streams == count - 1
        assert checks[1:] == before[1:]  # nobody else looked up from their wait
    finally:
        feed.stop()
    for reader in readers[1:]:
        reader.join(WAIT_SECONDS)
        assert not reader.is_alive()


def test_an_idle_feed_reads_nothing_and_the_first_stream_starts_the_follower(
    registry: MemoryRegistry, clock: Clock
) -> None:
    """No stream, no polling: an idle server read the log 20 times a second for nobody."""
    log = CountingLog(registry)
    feed = RevocationFeed(log, clock, max_streams=2, poll_seconds=POLL)
    for _ in running(feed):
        time.sleep(20 * POLL)
        assert log.follower_reads == 0
        stream = feed.subscribe(Subscription(None, heartbeat_seconds=HEARTBEAT_BOUNDS[0]), lambda: True)
        assert isinstance(next(stream), Marker)
        published = revoke_subjects(registry, clock, ["a"])
        assert take(stream, 1) == published  # from the follower's buffer
        assert log.follower_reads > 0
        stream.close()
        time.sleep(5 * POLL)  # the follower notices at its next poll that nobody is subscribed
        idle_reads = log.follower_reads
        time.sleep(20 * POLL)
        assert log.follower_reads == idle_reads


def test_a_stream_that_subscribes_to_an_idle_feed_does_not_wait_a_poll_interval(
    registry: MemoryRegistry, clock: Clock
) -> None:
    old = revoke_subjects(registry, clock, ["a", "b"])
    feed = RevocationFeed(registry, clock, max_streams=2, poll_seconds=30)
    for _ in running(feed):
        began = time.monotonic()
        stream = feed.subscribe(Subscription(None, heartbeat_seconds=HEARTBEAT_BOUNDS[0]), lambda: True)
        assert take(stream, 3) == [*old, Marker(MarkerType.HEARTBEAT, old[-1].cursor, clock.now())]
        # Caught up and live (the heartbeat comes from the feed) after about one heartbeat interval.
        assert time.monotonic() - began < HEARTBEAT_BOUNDS[0] + 5
