"""Durability of revocations: the Redis settings they need, checked at start-up and on every health probe.

An acknowledged revocation must survive a Redis restart and must never be evicted, so the registry can
refuse to work on a Redis that is not configured for that (:func:`persistence_problems`): every master
needs ``appendonly yes`` and ``maxmemory-policy noeviction``. It must survive a failover too: with
``min_replicas_acked``, each revocation script is followed, on the same connection, by ``WAIT`` for that
many replicas, and a revocation they do not confirm in time fails closed (``StoreUnavailable``) instead
of being acknowledged (the write stays on the master; a retry is idempotent); that part lives with the
revocation scripts in :mod:`.registry`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import redis
from redis.cluster import RedisCluster

from delegation_service.adapters.redis.calls import RedisClient, store_call, text
from delegation_service.domain.errors import StoreUnavailable

log = logging.getLogger(__name__)

REQUIRED_SETTINGS = {"appendonly": "yes", "maxmemory-policy": "noeviction"}
"""What every master must be configured with for revocations to hold: an AOF, so an acknowledged
revocation survives a restart, and no eviction, so a full Redis refuses writes (and the service fails
closed) instead of silently dropping revocation markers."""
UNSAFE_OVERRIDE = "redis.allow_unsafe_persistence"


@dataclass(frozen=True)
class PersistenceProblem:
    """A Redis setting that makes revocations unsafe, or that could not be read, on one node."""

    node: str
    setting: str
    found: str
    required: str

    def __str__(self) -> str:
        if not self.found:
            return (
                f"{self.node}: cannot read {self.setting} (CONFIG GET is disabled or not permitted, as on "
                f"many managed Redis services); it must be {self.required!r}"
            )
        return f"{self.node}: {self.setting} is {self.found!r}, revocations need {self.required!r}"


def persistence_problems(client: RedisClient) -> list[PersistenceProblem]:
    """What is wrong with ``client``'s Redis (every master of a cluster) for durable revocations.

    Empty when every master has the :data:`REQUIRED_SETTINGS`. A setting that cannot be read (``CONFIG``
    renamed away or refused by an ACL) is a problem too: it cannot be shown to be safe. Raises
    :class:`~delegation_service.domain.errors.StoreUnavailable` when a node does not answer.
    """
    problems: list[PersistenceProblem] = []
    with store_call():
        for name, node in _masters(client):
            for setting, required in REQUIRED_SETTINGS.items():
                try:
                    found = _config_value(node.config_get(setting), setting)
                except redis.ResponseError:  # unknown command, NOPERM: includes NoPermissionError
                    problems.append(PersistenceProblem(name, setting, "", required))
                    continue
                if found != required:
                    problems.append(PersistenceProblem(name, setting, found or "(unset)", required))
    return problems


def _masters(client: RedisClient) -> list[tuple[str, redis.Redis]]:
    """Each master with a plain client on it; a single node (or Sentinel's current master) is one."""
    if not isinstance(client, RedisCluster):
        kwargs = client.connection_pool.connection_kwargs
        # A Sentinel-managed pool names no host: the master is whichever Sentinel reports.
        name = f"{kwargs['host']}:{kwargs.get('port', 6379)}" if "host" in kwargs else "the master"
        return [(name, client)]
    masters = []
    for node in client.get_primaries():  # type: ignore[no-untyped-call]
        connection = node.redis_connection or client.get_redis_connection(node)
        masters.append((str(node.name), connection))
    return masters


def _config_value(reply: Mapping[Any, Any], setting: str) -> str:
    for name, value in reply.items():
        if text(name) == setting:
            return text(value)
    return ""


class DurabilityCheck:
    """What the registry last found of its Redis's persistence settings, and the refusal while they are
    wrong (when ``required``)."""

    def __init__(self, client: RedisClient, *, required: bool) -> None:
        self._client = client
        self._required = required
        # None until the settings were read once; then the problems last found (empty: safe).
        self._problems: tuple[PersistenceProblem, ...] | None = None

    @property
    def required(self) -> bool:
        """Whether calls fail closed while the settings are wrong."""
        return self._required

    def check(self) -> list[PersistenceProblem]:
        """Read the persistence settings now, remember the answer and return what is wrong.

        Raises :class:`~delegation_service.domain.errors.StoreUnavailable` when Redis does not answer
        (the last answer is kept). When persistence is required, a change for the worse is logged as an
        error naming the settings, and a change back as a notice.
        """
        problems = tuple(persistence_problems(self._client))
        previous, self._problems = self._problems, problems
        if self._required and problems != previous:
            if problems:
                log.error(
                    "refusing to serve: Redis is not configured for durable revocations",
                    extra={
                        "event": "redis_persistence",
                        "outcome": "unsafe",
                        "problems": [str(p) for p in problems],
                        "override": UNSAFE_OVERRIDE,
                    },
                )
            elif previous:
                log.warning(
                    "Redis persistence settings are safe again: serving",
                    extra={"event": "redis_persistence", "outcome": "safe"},
                )
        return list(problems)

    def ensure(self) -> None:
        """Raise ``StoreUnavailable`` when durability is required and the settings are not known safe.

        Settings never read yet (Redis was down at start-up) are read first; settings found wrong fail
        the call without another round trip, until a health probe (:meth:`check`) finds them fixed.
        """
        if not self._required or self._problems == ():
            return
        problems = self._problems
        if problems is None:
            problems = tuple(self.check())
        if problems:
            raise StoreUnavailable(
                message="the token store is not configured for durable revocations (see the log)"
            )


class PersistenceChecked(Protocol):
    """A store whose persistence settings can be read (the Redis registry)."""

    def check_persistence(self) -> list[PersistenceProblem]:
        """Read the settings now; see :meth:`DurabilityCheck.check`."""
        ...


class UnsafePersistence(RuntimeError):
    """Raised at start-up when Redis is not configured for durable revocations and no override is set."""


def check_persistence_at_startup(registry: PersistenceChecked, *, allow_unsafe: bool) -> None:
    """The start-up check of Redis's persistence settings; the composition root calls it once.

    Wrong settings raise :class:`UnsafePersistence` (the process refuses to start) with a message that
    names each setting and the override, unless ``allow_unsafe`` (development only) turns that into a
    warning. A Redis that does not answer yet is no reason to exit: the service starts NOT_SERVING, and a
    registry built with ``require_persistence`` checks the settings before its first call.
    """
    try:
        problems = registry.check_persistence()
    except StoreUnavailable:
        log.warning(
            "cannot check Redis persistence settings at start-up: Redis does not answer; they are checked "
            "when it does, and the service reports NOT_SERVING until then",
            extra={"event": "redis_persistence", "outcome": "unknown"},
        )
        return
    if not problems:
        log.info(
            "Redis persistence settings are safe",
            extra={"event": "redis_persistence", "outcome": "safe", "required": REQUIRED_SETTINGS},
        )
        return
    described = "; ".join(str(p) for p in problems)
    if allow_unsafe:
        log.warning(
            "Redis is not configured for durable revocations; serving anyway because %s is set "
            "(development only: a restart or eviction can undo revocations)",
            UNSAFE_OVERRIDE,
            extra={"event": "redis_persistence", "outcome": "overridden", "problems": described},
        )
        return
    # check_persistence has logged the error with the details.
    raise UnsafePersistence(
        f"Redis is not configured for durable revocations: {described}. Fix the Redis configuration "
        "(appendonly yes, maxmemory-policy noeviction on every master), or set "
        f"{UNSAFE_OVERRIDE} = true for development only"
    )
