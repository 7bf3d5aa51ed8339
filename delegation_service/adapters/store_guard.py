"""Fail fast on a stalled or unreachable Redis: deadline-capped waits and a circuit breaker per node.

Two things happen in every Redis connection the composition root builds (:func:`guarded_connection_class`):

- **Every wait is capped by the caller's deadline** (:mod:`delegation_service.deadlines`): the socket
  connect and read timeouts of each command are the smaller of ``redis.timeout_ms`` and what is left of
  the gRPC call's deadline, so no store wait outlasts the caller (SPEC §5).
- **An unresponsive node is detected once** by a :class:`CircuitBreaker`: after ``failures`` consecutive
  timeouts or connection errors it opens, and every command to that node is refused at once (a
  ``RedisError``, so the registry fails closed with ``StoreUnavailable``: ``UNAVAILABLE``) instead of
  waiting out its socket timeout on a worker thread (or being retried). After ``cooldown`` one command
  (the next call's, or the health probe's) goes through as a probe: an answer closes the breaker, a
  failure opens it again.
  The opening and the recovery are each logged once, the recovery with the outage's duration.

The breaker sits at the connection rather than around the registry so that it is per node: on a
cluster, one frozen master fails its own chains fast while the others keep answering; with Sentinel
there is one breaker for the service name, so a promoted replica closes the breaker the old master
opened. Any reply, an error reply included, proves the node answers; a timeout of a wait that the
caller's deadline had shortened proves nothing (the caller was short of time, not Redis slow) and is
not counted.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar, cast

from redis.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from delegation_service import deadlines

log = logging.getLogger(__name__)

MIN_WAIT_SECONDS = 0.001
"""Less than this left of the caller's deadline: the command is not even sent."""
PROBE_TIMEOUT_SECONDS = 5.0
"""A probe that has not reported back by then (its thread died, say) lets another probe go."""


class StoreRefused(RedisError):
    """Raised instead of sending a command while the node's circuit breaker is open.

    A plain ``RedisError``, neither a connection error nor a timeout: redis-py retries those (after a
    back-off), a cluster client reloads its topology on them, and a refusal must cost nothing.
    """


class DeadlinePassed(RedisError):
    """Raised instead of sending a command when the caller's deadline has (all but) passed (not
    retried either: no time is left for it)."""


class BreakerState(enum.Enum):
    """Where a :class:`CircuitBreaker` stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Closed, open, or half-open with one probe in flight, for one Redis node. Thread-safe.

    ``owner`` is whatever sends on behalf of a call (a connection): a probe's own follow-up commands
    (a reconnect's handshake, a health-check PING) pass while it holds the probe.
    """

    def __init__(
        self,
        node: str,
        *,
        failures: int,
        cooldown_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures <= 0 or cooldown_seconds <= 0:
            raise ValueError("failures and cooldown_seconds must be positive")
        self.node = node
        self._threshold = failures
        self._cooldown = cooldown_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._opened_at = 0.0  # last time it opened (re-opened after a failed probe included)
        self._outage_began = 0.0  # first time it opened in this outage
        self._probe: object | None = None
        self._probe_began = 0.0

    @property
    def state(self) -> BreakerState:
        """The state right now."""
        with self._lock:
            return self._state

    def admit(self, owner: object) -> None:
        """Let ``owner`` send a command, or raise :class:`StoreRefused` while the node is known down."""
        if self._state is BreakerState.CLOSED:  # the common case, without the lock (a benign race)
            return
        self._admit_when_not_closed(owner)

    def _admit_when_not_closed(self, owner: object) -> None:
        with self._lock:
            if self._state is BreakerState.CLOSED:
                return
            now = self._clock()
            if self._state is BreakerState.OPEN:
                if now - self._opened_at < self._cooldown:
                    raise StoreRefused(f"Redis {self.node} is not answering (circuit open)")
                self._state = BreakerState.HALF_OPEN
                self._probe = None
            if self._probe is owner:
                return
            if self._probe is None or now - self._probe_began > PROBE_TIMEOUT_SECONDS:
                self._probe, self._probe_began = owner, now
                return
            raise StoreRefused(f"Redis {self.node} is not answering (probing)")

    def succeeded(self) -> None:
        """A reply came back: the node answers."""
        if self._state is BreakerState.CLOSED and not self._consecutive:  # the common case, lock-free
            return
        with self._lock:
            self._consecutive = 0
            if self._state is BreakerState.CLOSED:
                return
            outage = self._clock() - self._outage_began
            self._state, self._probe = BreakerState.CLOSED, None
        log.warning(
            "Redis %s answers again after %.2fs: serving",
            self.node,
            outage,
            extra={
                "event": "redis_outage",
                "outcome": "recovered",
                "node": self.node,
                "outage_seconds": round(outage, 3),
            },
        )

    def failed(self, owner: object, cause: str) -> None:
        """A command of ``owner`` timed out or lost its connection."""
        with self._lock:
            now = self._clock()
            if self._state is BreakerState.CLOSED:
                self._consecutive += 1
                if self._consecutive < self._threshold:
                    return
                self._state, self._opened_at, self._outage_began = BreakerState.OPEN, now, now
                failures = self._consecutive
            else:
                if self._state is BreakerState.HALF_OPEN and self._probe is owner:
                    self._state, self._opened_at, self._probe = BreakerState.OPEN, now, None
                return
        log.error(
            "Redis %s is unreachable or stalled: failing calls fast (UNAVAILABLE) until it answers",
            self.node,
            extra={
                "event": "redis_outage",
                "outcome": "down",
                "node": self.node,
                "failures": failures,
                "cause": cause,
            },
        )

    def inconclusive(self, owner: object) -> None:
        """A command of ``owner`` ended without telling whether the node answers: a probe goes again."""
        with self._lock:
            if self._state is BreakerState.HALF_OPEN and self._probe is owner:
                self._probe = None


class StoreGuard:
    """The circuit breakers of one store, one per node, created on first use."""

    def __init__(
        self, *, failures: int, cooldown_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._failures = failures
        self._cooldown = cooldown_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._breakers: dict[str, CircuitBreaker] = {}

    def breaker(self, node: str) -> CircuitBreaker:
        """The breaker of ``node`` (``host:port``, or ``sentinel:<service>``)."""
        with self._lock:
            found = self._breakers.get(node)
            if found is None:
                found = CircuitBreaker(
                    node, failures=self._failures, cooldown_seconds=self._cooldown, clock=self._clock
                )
                self._breakers[node] = found
            return found

    def open_nodes(self) -> list[str]:
        """The nodes whose breaker is not closed."""
        with self._lock:
            breakers = list(self._breakers.values())
        return sorted(b.node for b in breakers if b.state is not BreakerState.CLOSED)


class _GuardedConnection:
    """Mixed in before a redis-py connection class; see the module docstring.

    Typed loosely (``Any``) where it reaches into redis-py's untyped connection internals.
    """

    store_guard: ClassVar[StoreGuard]
    _deadline_capped: bool = False
    _guard_breaker: CircuitBreaker | None = None

    def _breaker(self) -> CircuitBreaker:
        # A connection's node never changes (a Sentinel one's is the service name): looked up once.
        if self._guard_breaker is None:
            self._guard_breaker = self.store_guard.breaker(self._guard_node())
        return self._guard_breaker

    def _guard_node(self) -> str:
        # A Sentinel-managed connection follows whichever node is master: one breaker for the service.
        service = getattr(getattr(self, "connection_pool", None), "service_name", None)
        if isinstance(service, str):
            return f"sentinel:{service}"
        return str(cast(Any, self)._host_error())

    def _budget(self, configured: float | None) -> float | None:
        """The wait allowed for the next socket operation: ``configured``, capped by the deadline."""
        left = deadlines.remaining()
        self._deadline_capped = False
        if left is None:
            return configured
        if left < MIN_WAIT_SECONDS:
            raise DeadlinePassed("the call's deadline has passed")
        if configured is None or left < configured:
            self._deadline_capped = True
            return left
        return configured

    def _report(self, breaker: CircuitBreaker, error: Exception) -> None:
        if isinstance(error, RedisTimeoutError) and self._deadline_capped:
            breaker.inconclusive(self)
            return
        breaker.failed(self, f"{type(error).__name__}: {error}")

    def connect(self) -> None:
        """Connect unless the node is known down."""
        breaker = self._breaker()
        breaker.admit(self)
        try:
            super().connect()  # type: ignore[misc]
        except (RedisConnectionError, RedisTimeoutError) as error:
            self._report(breaker, error)
            raise

    def _connect(self) -> Any:
        this = cast(Any, self)
        configured = this.socket_connect_timeout
        this.socket_connect_timeout = self._budget(configured)
        try:
            return super()._connect()  # type: ignore[misc]
        finally:
            this.socket_connect_timeout = configured

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        """Send unless the node is known down, with the socket timeout capped by the deadline."""
        this = cast(Any, self)
        breaker = self._breaker()
        breaker.admit(self)
        try:
            timeout = self._budget(this.socket_timeout)
            if not this._sock:
                this.connect_check_health(check_health=False)
            this._sock.settimeout(timeout)
            super().send_packed_command(command, check_health)  # type: ignore[misc]
        except (RedisConnectionError, RedisTimeoutError) as error:
            self._report(breaker, error)
            raise

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        """Read a reply; any reply (an error reply too) tells the breaker the node answers."""
        breaker = self._breaker()
        try:
            response = super().read_response(*args, **kwargs)  # type: ignore[misc]
        except ResponseError:
            breaker.succeeded()
            raise
        except (RedisConnectionError, RedisTimeoutError) as error:
            self._report(breaker, error)
            raise
        breaker.succeeded()
        return response


def guarded_connection_class(base: type[AbstractConnection], guard: StoreGuard) -> type[AbstractConnection]:
    """``base`` (a redis-py connection class) with deadline-capped waits and ``guard``'s breakers."""
    return cast(
        type[AbstractConnection],
        type(f"Guarded{base.__name__}", (_GuardedConnection, base), {"store_guard": guard}),
    )


__all__ = [
    "BreakerState",
    "CircuitBreaker",
    "DeadlinePassed",
    "StoreGuard",
    "StoreRefused",
    "guarded_connection_class",
]
