"""One follower of the store's revocation log, shared by every ``WatchRevocations`` stream (SPEC §5).

Each stream used to poll the store on its own, four times a second; a thousand followers were four
thousand reads a second and a thousand busy threads. Here one thread polls the log (every 50 ms) and
keeps the newest events in a bounded buffer; a stream reads the store itself only to catch up (a
snapshot, a resume from an old cursor, or after falling behind the buffer) and otherwise sleeps on a
condition until the feed has something for it. A cap on open streams makes the next one fail at once
instead of queueing.

The follower polls only while a stream is subscribed: the streams are its only consumers in the server
(the edges follow over ``WatchRevocations`` themselves), and an idle process polling 20 times a second
cost every bench server a few percent of a core for nothing. The first stream to subscribe wakes it at
once; a stream catching up asks it for a poll and waits for that poll, not for the next interval.
"""

from __future__ import annotations

import enum
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass

from delegation_service.domain.errors import CursorExpired, DelegationError, TooManyStreams
from delegation_service.domain.ports import Clock, RevocationEvent, RevocationLog

log = logging.getLogger(__name__)

PAGE = 500
"""Events read per store call, by the shared follower and by a stream catching up."""
POLL_SECONDS = 0.05
"""How often the shared follower reads the log while a stream is subscribed: a revocation reaches every
follower within about this long (plus delivery), for 20 small reads a second per process, whatever the
number of streams; none while no stream is open."""
IDLE_CHECK_SECONDS = 30.0
"""How often a stream without heartbeats wakes anyway. A follower that goes away wakes its own stream
(:meth:`FeedStream.wake`, from the call's termination callback), so idle streams need not poll: a
thousand of them waking every second cost unary calls the GIL."""


class MarkerType(enum.Enum):
    """A control message of a revocation stream."""

    HEARTBEAT = "heartbeat"
    SNAPSHOT_COMPLETE = "snapshot_complete"


@dataclass(frozen=True)
class Marker:
    """A control message: everything up to ``cursor`` has been sent, as of ``server_time``."""

    type: MarkerType
    cursor: str
    server_time: int


HEARTBEAT_BOUNDS = (1.0, 60.0)
"""The heartbeat intervals a follower may ask for, in seconds; others are brought within them."""


@dataclass(frozen=True)
class Subscription:
    """What one stream asked for: where to start, whether with a snapshot, and how often to hear
    from the service when nothing happens (``None``: never)."""

    cursor: str | None
    include_snapshot: bool = False
    heartbeat_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.heartbeat_seconds is not None:
            low, high = HEARTBEAT_BOUNDS
            object.__setattr__(self, "heartbeat_seconds", min(max(self.heartbeat_seconds, low), high))


class RevocationFeed:
    """The shared follower and its bounded buffer of recent events.

    ``buffer_size`` bounds memory whatever the revocation rate; a stream that falls further behind
    reads the store until it is back within the buffer, so it never misses an event.
    """

    def __init__(
        self,
        log_: RevocationLog,
        clock: Clock,
        *,
        max_streams: int,
        poll_seconds: float = POLL_SECONDS,
        buffer_size: int = 10_000,
    ) -> None:
        if max_streams <= 0 or poll_seconds <= 0 or buffer_size <= 0:
            raise ValueError("max_streams, poll_seconds and buffer_size must be positive")
        self._log = log_
        self._clock = clock
        self._poll_seconds = poll_seconds
        self._slots = threading.BoundedSemaphore(max_streams)
        # One lock, and one condition over it per waiting stream: new events wake them all, but a
        # follower that goes away wakes only its own stream (a shared condition woke every stream
        # per departure, so a thousand followers leaving at once were a million wake-ups that held
        # the GIL for seconds and timed out unary calls).
        self._lock = threading.Lock()
        self._waiting: set[threading.Condition] = set()
        # Guarded by _lock: the waiting streams' conditions, the buffered events, their positions (a
        # count of events seen since the feed started) and the position of each buffered cursor.
        self._buffer: deque[RevocationEvent] = deque(maxlen=buffer_size)
        self._next_position = 0
        self._positions: dict[str, int] = {}
        self._head: str | None = None
        self._caught_up = False
        self._polled_at = clock.now()  # when the follower last read to the log's end
        self._polls = 0  # reads to the log's end so far: a stream catching up waits for the next one
        self._poll_now = False  # a stream asked for a poll before the interval is up
        self._follower = threading.Condition(self._lock)  # the follower waits on it, idle or between polls
        self._polled = threading.Condition(self._lock)  # streams catching up wait on it for a poll
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="revocation-feed", daemon=True)
        self._streams = 0

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the shared follower (it first reads up to the log's current end)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the follower and wake every stream (each then ends as its ``keep_going`` says).

        Does not wait for the follower: it may be inside a read of a stalled store, and shutdown must
        not wait on that (the thread ends after its read; it is a daemon).
        """
        self._stopping.set()
        with self._lock:
            self._notify_waiting()
            self._follower.notify_all()
            self._polled.notify_all()

    def _notify_waiting(self) -> None:
        """Wake every waiting stream; the caller holds ``_lock``."""
        for condition in self._waiting:
            condition.notify()

    @property
    def open_streams(self) -> int:
        """Streams subscribed right now."""
        return self._streams

    @property
    def waiting_streams(self) -> int:
        """Streams asleep until the feed has something for them (or their follower goes away)."""
        with self._lock:
            return len(self._waiting)

    # -- the shared follower --------------------------------------------------------------------------

    def _follow(self) -> None:
        failing = False
        while self._wanted():
            began = self._clock.now()
            try:
                events = self._log.events(self._head, PAGE)
            except CursorExpired:
                # Our own position fell out of retention (an outage longer than it): start again from
                # the log's start; streams read the store themselves until the feed is back.
                self._reset()
                continue
            except DelegationError as error:
                if not failing:
                    log.warning(
                        "revocation feed cannot read the log", extra={"reason": error.reason.identifier}
                    )
                failing = True
                self._pause()
                continue
            if failing:
                log.info("revocation feed reads the log again")
                failing = False
            if events:
                self._append(events)
            if len(events) < PAGE:
                with self._lock:
                    self._caught_up = True
                    self._polled_at = began
                    self._polls += 1
                    self._polled.notify_all()
                self._pause()

    def _wanted(self) -> bool:
        """Whether to poll now: block while no stream is subscribed (until one is, or the feed stops).

        While idle the buffer stops following the log, so it no longer counts as caught up: the first
        stream to come catches up from the store until the follower has read to the log's end again.
        """
        with self._lock:
            if not self._streams and not self._stopping.is_set():
                self._caught_up = False
                while not self._streams and not self._stopping.is_set():
                    self._follower.wait()
        return not self._stopping.is_set()

    def _pause(self) -> None:
        """Wait for the poll interval, or less if a stream asks for a poll (or the feed stops)."""
        with self._lock:
            if not self._poll_now and not self._stopping.is_set():
                self._follower.wait(self._poll_seconds)
            self._poll_now = False

    def _await_poll(self) -> None:
        """Ask the follower for a poll now and wait (at most a poll interval) until one has read to the
        log's end; the caller does not hold ``_lock``."""
        with self._lock:
            polls = self._polls
            self._poll_now = True
            self._follower.notify()
            if self._polls == polls and not self._stopping.is_set():
                self._polled.wait(self._poll_seconds)

    def _reset(self) -> None:
        with self._lock:
            self._buffer.clear()
            self._positions.clear()
            self._head = None
            self._caught_up = False

    def _append(self, events: Sequence[RevocationEvent]) -> None:
        with self._lock:
            for event in events:
                if len(self._buffer) == self._buffer.maxlen:
                    del self._positions[self._buffer[0].cursor]
                self._buffer.append(event)
                self._positions[event.cursor] = self._next_position
                self._next_position += 1
            self._head = events[-1].cursor
            self._notify_waiting()

    # -- one stream -----------------------------------------------------------------------------------

    def subscribe(self, subscription: Subscription, keep_going: Callable[[], bool]) -> FeedStream:
        """The stream of ``subscription`` while ``keep_going()`` holds.

        Its first read raises :class:`TooManyStreams` past the cap, and ``CursorExpired`` when the
        cursor is older than the retained log (the follower must start again from a snapshot).
        """
        return FeedStream(subscription, keep_going, threading.Condition(self._lock), self._run)

    def _run(self, stream: FeedStream) -> Generator[RevocationEvent | Marker, None, None]:
        if not self._slots.acquire(blocking=False):
            raise TooManyStreams()
        with self._lock:
            self._streams += 1
            self._follower.notify()  # the first stream wakes an idle follower at once
        try:
            yield from self._serve(stream)
        finally:
            with self._lock:
                self._streams -= 1
                self._waiting.discard(stream.condition)
            self._slots.release()

    def _serve(self, stream: FeedStream) -> Iterator[RevocationEvent | Marker]:
        subscription, keep_going = stream.subscription, stream.keep_going
        cursor = subscription.cursor
        snapshot_pending = subscription.include_snapshot and not cursor
        # The stream reads the store itself until a read comes back short: only then is everything that
        # was acknowledged before it subscribed known to be sent (the feed may be a poll behind).
        read_to_end_at: int | None = None
        while keep_going() and not self._stopping.is_set():
            position = self._live_position(cursor) if read_to_end_at is not None else None
            if position is None:
                # Catch up from the store itself: a snapshot, an old cursor, a feed still starting, or
                # a stream that fell behind the buffer.
                began = self._clock.now()
                events = self._log.events(cursor, PAGE)
                for event in events:
                    cursor = event.cursor
                    if not (snapshot_pending and event.expires_at <= began):
                        yield event
                if len(events) < PAGE:
                    if snapshot_pending:
                        snapshot_pending = False
                        yield Marker(MarkerType.SNAPSHOT_COMPLETE, cursor or "", began)
                    if read_to_end_at is not None:
                        self._await_poll()  # the feed reaches this end within a poll
                    read_to_end_at = began
                continue
            cursor = yield from self._live(stream, position, cursor)

    def _live_position(self, cursor: str | None) -> int | None:
        """The buffer position just after ``cursor``, when the buffer holds everything after it."""
        with self._lock:
            if not self._caught_up:
                return None
            if cursor == self._head:
                return self._next_position
            found = self._positions.get(cursor) if cursor is not None else None
            return found + 1 if found is not None else None

    def _live(
        self, stream: FeedStream, position: int, cursor: str | None
    ) -> Generator[RevocationEvent | Marker, None, str | None]:
        """Events from the buffer as they arrive; returns the cursor reached if the stream falls behind
        the buffer (or the feed resets), so that it catches up from the store."""
        heartbeat_seconds = stream.subscription.heartbeat_seconds
        # Without heartbeats, still wake now and then to notice a follower that went away.
        wait = heartbeat_seconds if heartbeat_seconds is not None else IDLE_CHECK_SECONDS
        while stream.keep_going() and not self._stopping.is_set():
            with self._lock:
                if position >= self._next_position and not (stream.woken or self._stopping.is_set()):
                    self._waiting.add(stream.condition)
                    stream.condition.wait(wait)
                    self._waiting.discard(stream.condition)
                stream.woken = False
                oldest = self._next_position - len(self._buffer)
                if position < oldest or not self._caught_up:
                    return cursor
                batch = list(itertools.islice(self._buffer, position - oldest, None))
            for event in batch:
                cursor = event.cursor
                yield event
            position += len(batch)
            if not batch and heartbeat_seconds is not None:
                # As of the feed's last read of the log, not of now: the follower has everything up to then.
                yield Marker(MarkerType.HEARTBEAT, cursor or "", self._polled_at)
        return cursor


class FeedStream(Iterator[RevocationEvent | Marker]):
    """One subscriber's stream: iterate it for events and markers; :meth:`wake` makes it look at its
    ``keep_going`` now (its follower went away) without waking any other stream."""

    def __init__(
        self,
        subscription: Subscription,
        keep_going: Callable[[], bool],
        condition: threading.Condition,
        run: Callable[[FeedStream], Generator[RevocationEvent | Marker, None, None]],
    ) -> None:
        self.subscription = subscription
        self.keep_going = keep_going
        self.condition = condition  # over the feed's lock
        self.woken = False  # guarded by the feed's lock: a wake that came before the stream waited
        self._items = run(self)

    def __next__(self) -> RevocationEvent | Marker:
        return next(self._items)

    def close(self) -> None:
        """End the stream now (frees its slot)."""
        self._items.close()

    def wake(self) -> None:
        """Wake this stream if it waits; if it is about to wait, it will not."""
        with self.condition:
            self.woken = True
            self.condition.notify()
