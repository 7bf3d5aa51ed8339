"""The token registry over Redis: single node, Sentinel-managed or Cluster (SPEC §5).

Key layout (``<p>`` is the prefix; every key carries a TTL, so memory stays bounded under any load)::

    <p>:{<chain>}:t:<token_id>   record of one token (compact JSON array), expires at exp + leeway
    <p>:{<chain>}:m              sorted set of the chain's token ids scored by exp (for GetChain)
    <p>:{<chain>}:rc             chain revoked marker, expires at the chain's exp + leeway
    <p>:{<chain>}:rt:<token_id>  token revoked marker, expires at the token's exp + leeway
    <p>:h:s:<subject>            subject horizon (epoch seconds), expires at horizon + retention
    <p>:h:c:<client_id>          client horizon (epoch seconds), expires at horizon + retention
    <p>:events                   stream of revocation events, trimmed to the event retention

Every key of a chain shares the hash tag ``{<chain>}``, so every multi-key step on a chain lands on one
Cluster slot and stays atomic. Revoking writes one marker or one horizon whatever the chain's size, and
checking a token reads a fixed number of keys (one MGET on a single node).

The leeway is added to every record and marker TTL because the service hosts' clocks and Redis's clock
differ: a marker that Redis dropped at the exact expiry could let a host whose clock lags see a revoked
token as alive again. TTLs are never shortened (``EXPIREAT ... GT``) for the same reason.

An acknowledged revocation must survive a Redis restart and must never be evicted, so the registry can
refuse to work on a Redis that is not configured for that (:func:`persistence_problems`): every master
needs ``appendonly yes`` and ``maxmemory-policy noeviction``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import RedisClusterException, RedisError

from delegation_service.domain.errors import InvalidRequest, StoreUnavailable
from delegation_service.domain.ports import RevocationEvent
from delegation_service.domain.revocation import (
    ChainSnapshot,
    HorizonKey,
    HorizonKind,
    StateSnapshot,
    TokenRecord,
)
from delegation_service.domain.tokens import TokenKind

RedisClient = redis.Redis | RedisCluster
"""The clients the registry accepts; built by the composition root, never here."""

log = logging.getLogger(__name__)

REQUIRED_SETTINGS = {"appendonly": "yes", "maxmemory-policy": "noeviction"}
"""What every master must be configured with for revocations to hold: an AOF, so an acknowledged
revocation survives a restart, and no eviction, so a full Redis refuses writes (and the service fails
closed) instead of silently dropping revocation markers."""
UNSAFE_OVERRIDE = "redis.allow_unsafe_persistence"
CHAIN_READ_BATCH = 1000
"""Most keys one MGET of a chain view reads: Redis runs one command at a time, and an MGET of a whole
100,000-token chain would keep every other client waiting while it runs."""

# First element of every record: what it is and in which encoding, so a rolling deploy can still read the
# records of the previous release. A root keeps its own facts; a child keeps only what differs from its
# root (client, scopes, issue time as an offset, lifetime) and borrows the rest from the root's record,
# read in the same MGET. That keeps a tracked child near 200 bytes of Redis memory, record and
# membership together, instead of twice that.
_ROOT_V1 = 1
_CHILD_V1 = 2
_HORIZON_CODES = {HorizonKind.SUBJECT: "s", HorizonKind.CLIENT: "c"}
_HORIZON_EVENT_KINDS = {HorizonKind.SUBJECT: "subject", HorizonKind.CLIENT: "client"}
_STREAM_ID = re.compile(r"\d{1,20}-\d{1,20}")

# Shared by the scripts below. EXPIREAT GT treats a key without a TTL as never expiring and so would
# leave a freshly created key immortal: such a key gets a plain EXPIREAT instead.
_EXTEND = """
local function extend(key, at)
  if redis.call('PTTL', key) == -1 then
    return redis.call('EXPIREAT', key, at)
  end
  return redis.call('EXPIREAT', key, at, 'GT')
end
"""

# KEYS: chain marker, members, root record, child record.
# ARGV: root id, root value, root exp, child id, child value, child exp, leeway.
# Nothing is written on a revoked chain. The child's record is written before the membership that points
# at it (the port's contract). Records already past their expiry are not written at all (SET EXAT in the
# past would only delete them), and members whose records have expired are dropped on every write, so the
# set never outgrows the chain's live tokens. Redis's own clock decides, as it does for key expiry.
_RECORD_CHILD = (
    _EXTEND
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local leeway = tonumber(ARGV[7])
local now = tonumber(redis.call('TIME')[1])
local root_until = tonumber(ARGV[3]) + leeway
local child_until = tonumber(ARGV[6]) + leeway
if root_until > now then
  redis.call('SET', KEYS[3], ARGV[2], 'NX', 'EXAT', root_until)
end
if child_until > now then
  redis.call('SET', KEYS[4], ARGV[5], 'EXAT', child_until)
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1], ARGV[6], ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - leeway)
extend(KEYS[2], math.max(root_until, child_until))
return 1
"""
)

# KEYS: marker. ARGV: expire at (epoch seconds). Idempotent; never shortens a marker's life.
_MARK = (
    _EXTEND
    + """
redis.call('SET', KEYS[1], '1', 'KEEPTTL')
extend(KEYS[1], ARGV[1])
return 1
"""
)

# KEYS: horizon. ARGV: horizon (epoch seconds), retention (seconds).
# A horizon never moves back: the larger of the stored and the requested value wins and is returned.
_HORIZON = (
    _EXTEND
    + """
local at = tonumber(ARGV[1])
local stored = redis.call('GET', KEYS[1])
if stored and tonumber(stored) >= at then
  at = tonumber(stored)
else
  redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
end
extend(KEYS[1], at + tonumber(ARGV[2]))
return at
"""
)

# KEYS: stream. ARGV: min id to keep, expire at, then field/value pairs. Returns the new entry's id.
# The stream gets a TTL too: when nothing was revoked for a whole retention period, every entry is stale.
_PUBLISH = (
    _EXTEND
    + """
local id = redis.call('XADD', KEYS[1], 'MINID', '~', ARGV[1], '*', unpack(ARGV, 3))
extend(KEYS[1], ARGV[2])
return id
"""
)


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
    with _store_call():
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
        if _text(name) == setting:
            return _text(value)
    return ""


class RedisRegistry:
    """A :class:`~delegation_service.domain.ports.TokenRegistry` kept in Redis.

    ``client`` is a ready ``redis.Redis`` (single node or Sentinel master) or, with ``cluster=True``, a
    ``redis.cluster.RedisCluster``; its timeouts and retries are the caller's choice. Every Redis failure
    surfaces as :class:`~delegation_service.domain.errors.StoreUnavailable` so callers fail closed.

    ``horizon_retention_seconds`` must outlast the longest-lived token a horizon can cover (upstream
    tokens included) plus the leeway: a horizon that expires earlier would bring its tokens back.

    With ``require_persistence=True`` the registry works only on a Redis whose settings pass
    :func:`persistence_problems`: it checks them before its first call and again on every :meth:`ping`
    (the health probe, so a failover to a badly configured node is noticed), and fails every call closed
    with :class:`~delegation_service.domain.errors.StoreUnavailable` while they are wrong.
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        prefix: str = "ds",
        leeway_seconds: int = 60,
        horizon_retention_seconds: int = 86_400,
        event_retention_seconds: int = 86_400,
        cluster: bool = False,
        require_persistence: bool = False,
    ) -> None:
        if cluster != isinstance(client, RedisCluster):
            raise ValueError("cluster=True goes with a RedisCluster client, cluster=False with any other")
        if not prefix or "{" in prefix or "}" in prefix:
            raise ValueError("the key prefix must be non-empty and free of hash-tag braces")
        if leeway_seconds < 0 or horizon_retention_seconds <= 0 or event_retention_seconds <= 0:
            raise ValueError("the leeway must be >= 0 and the retentions > 0")
        self._client = client
        self._prefix = prefix
        self._leeway = leeway_seconds
        self._horizon_retention = horizon_retention_seconds
        self._event_retention = event_retention_seconds
        self._cluster = cluster
        self._require_persistence = require_persistence
        # None until the settings were read once; then the problems last found (empty: safe).
        self._persistence: tuple[PersistenceProblem, ...] | None = None
        # register_script only hashes the source: no round trip here; Script loads it on first NOSCRIPT.
        self._record_child: Script = client.register_script(_RECORD_CHILD)
        self._mark: Script = client.register_script(_MARK)
        self._horizon: Script = client.register_script(_HORIZON)
        self._publish: Script = client.register_script(_PUBLISH)

    # -- keys -------------------------------------------------------------------------------------------

    def _chain_key(self, chain_id: str, suffix: str) -> str:
        return f"{self._prefix}:{{{chain_id}}}:{suffix}"

    def _record_key(self, chain_id: str, token_id: str) -> str:
        return self._chain_key(chain_id, f"t:{token_id}")

    def _token_marker_key(self, chain_id: str, token_id: str) -> str:
        return self._chain_key(chain_id, f"rt:{token_id}")

    def _horizon_key(self, key: HorizonKey) -> str:
        return f"{self._prefix}:h:{_HORIZON_CODES[key.kind]}:{key.value}"

    @property
    def _events_key(self) -> str:
        return f"{self._prefix}:events"

    # -- the port -----------------------------------------------------------------------------------------

    def snapshot(self, expected: TokenRecord) -> StateSnapshot:
        """Read the record, both markers and the horizons of ``expected``'s token in one MGET.

        On a cluster the chain's keys (one slot) are still read together; the horizons live in other
        slots and come with them through ``mget_nonatomic``.
        """
        _check_chain_id(expected.chain_id)
        horizon_keys = expected.horizon_keys()
        # A delegated token's record needs its root's record to decode; chains are one level deep, so the
        # root is the parent named in the token.
        root_id = expected.parent_token_id if expected.kind is TokenKind.DELEGATED else None
        chain_keys = [
            self._record_key(expected.chain_id, expected.token_id),
            self._token_marker_key(expected.chain_id, expected.token_id),
            self._chain_key(expected.chain_id, "rc"),
        ]
        if root_id is not None:
            chain_keys.append(self._record_key(expected.chain_id, root_id))
        with self._call():
            values = self._mget([*chain_keys, *(self._horizon_key(key) for key in horizon_keys)])
            raw_record, token_marker, chain_marker = values[:3]
            root = None
            if root_id is not None and values[3] is not None:
                root = _decode_root(expected.chain_id, root_id, values[3])
            record = None
            if raw_record is not None:
                record = _decode_record(expected.chain_id, expected.token_id, raw_record, root)
            return StateSnapshot(
                record=record,
                token_revoked=token_marker is not None,
                chain_revoked=chain_marker is not None,
                horizons=_decode_horizons(horizon_keys, values[len(chain_keys) :]),
            )

    def record_child(self, root: TokenRecord, child: TokenRecord) -> bool:
        """Record ``child`` (and ``root`` unless known) in one script on the chain's slot.

        Returns ``False``, having written nothing, when the chain is already revoked. Raises
        ``ValueError`` when ``child`` is not a child of ``root`` as SPEC §3 defines it (same chain,
        subject and bearer, never outliving it): the compact encoding takes those facts from the root.
        """
        _check_lineage(root, child)
        chain_id = child.chain_id
        _check_chain_id(chain_id)
        keys = [
            self._chain_key(chain_id, "rc"),
            self._chain_key(chain_id, "m"),
            self._record_key(chain_id, root.token_id),
            self._record_key(chain_id, child.token_id),
        ]
        args: list[str | int] = [
            root.token_id,
            _encode_root(root),
            root.expires_at,
            child.token_id,
            _encode_child(child),
            child.expires_at,
            self._leeway,
        ]
        with self._call():
            return int(self._record_child(keys=keys, args=args)) == 1

    def revoke_token(self, chain_id: str, token_id: str, expires_at: int, now: int) -> RevocationEvent:
        """Set the token's marker until ``expires_at`` (plus leeway), then publish the event."""
        _check_chain_id(chain_id)
        with self._call():
            self._mark(keys=[self._token_marker_key(chain_id, token_id)], args=[expires_at + self._leeway])
            return self._publish_event(
                "token", chain_id=chain_id, token_id=token_id, revoked_at=now, expires_at=expires_at, now=now
            )

    def revoke_chain(self, chain_id: str, expires_at: int, now: int) -> RevocationEvent:
        """Set the chain's marker until ``expires_at`` (plus leeway), then publish the event.

        One write whatever the chain's size: checks consult the marker, nothing fans out.
        """
        _check_chain_id(chain_id)
        with self._call():
            self._mark(keys=[self._chain_key(chain_id, "rc")], args=[expires_at + self._leeway])
            return self._publish_event(
                "chain", chain_id=chain_id, revoked_at=now, expires_at=expires_at, now=now
            )

    def revoke_horizon(self, key: HorizonKey, at: int, now: int) -> RevocationEvent:
        """Move the horizon to ``at`` unless it is already later, then publish the horizon in force.

        The event's ``revoked_at`` is the horizon itself (tokens issued at or before it are revoked), as
        the ``WatchRevocations`` response documents.
        """
        with self._call():
            effective = int(self._horizon(keys=[self._horizon_key(key)], args=[at, self._horizon_retention]))
            subject = key.value if key.kind is HorizonKind.SUBJECT else ""
            client_id = key.value if key.kind is HorizonKind.CLIENT else ""
            return self._publish_event(
                _HORIZON_EVENT_KINDS[key.kind],
                subject=subject,
                client_id=client_id,
                revoked_at=effective,
                expires_at=effective + self._horizon_retention,
                now=now,
            )

    def chain(self, chain_id: str) -> ChainSnapshot | None:
        """The chain's live records, its markers and the horizons they need; ``None`` if unknown.

        Not a single atomic read (a chain view needs no such guarantee): the members, then the chain's
        records and markers in MGETs of at most :data:`CHAIN_READ_BATCH` keys on its slot (so a huge
        chain never holds Redis up with one giant command), then the horizons.
        """
        if not _is_valid_chain_id(chain_id):
            return None
        with self._call():
            members = [_text(m) for m in _reply(self._client.zrange(self._chain_key(chain_id, "m"), 0, -1))]
            keys = [self._chain_key(chain_id, "rc")]
            keys += [self._record_key(chain_id, token_id) for token_id in members]
            keys += [self._token_marker_key(chain_id, token_id) for token_id in members]
            values: list[Any] = []
            for start in range(0, len(keys), CHAIN_READ_BATCH):
                values += _reply(self._client.mget(keys[start : start + CHAIN_READ_BATCH]))
            chain_revoked = values[0] is not None
            raw_records = values[1 : 1 + len(members)]
            markers = values[1 + len(members) :]
            decoded = _decode_chain(chain_id, members, raw_records)
            records = tuple(record for record in decoded if record is not None)
            if not records and not chain_revoked:
                return None
            revoked = frozenset(
                token_id
                for token_id, record, marker in zip(members, decoded, markers, strict=True)
                if record is not None and marker is not None
            )
            horizon_keys = tuple(dict.fromkeys(key for record in records for key in record.horizon_keys()))
            horizon_values = (
                self._mget([self._horizon_key(key) for key in horizon_keys]) if horizon_keys else []
            )
            return ChainSnapshot(
                chain_id=chain_id,
                records=records,
                chain_revoked=chain_revoked,
                revoked_token_ids=revoked,
                horizons=_decode_horizons(horizon_keys, horizon_values),
            )

    def events(self, after: str | None, limit: int) -> Sequence[RevocationEvent]:
        """Up to ``limit`` events after cursor ``after`` (a stream entry id), oldest first.

        Raises :class:`~delegation_service.domain.errors.InvalidRequest` for a cursor this store never
        gave out.
        """
        if after and not _STREAM_ID.fullmatch(after):
            raise InvalidRequest(message="the revocation cursor is malformed")
        if limit <= 0:
            return []
        start = f"({after}" if after else "-"
        with self._call():
            entries = _reply(self._client.xrange(self._events_key, start, "+", count=limit))
            return [_decode_event(entry_id, fields) for entry_id, fields in entries]

    def ping(self) -> bool:
        """Whether Redis answers right now (and, when required, is configured safely); never raises."""
        try:
            if self._require_persistence and self.check_persistence():
                return False
            if self._cluster:
                # Every master: a plain PING reaches one node, and the chains of the others could be
                # unreachable while it answers.
                cluster = cast(RedisCluster, self._client)
                return bool(cluster.ping(target_nodes=RedisCluster.PRIMARIES))
            return bool(self._client.ping())
        except (StoreUnavailable, RedisError, RedisClusterException, OSError):
            return False

    # -- persistence --------------------------------------------------------------------------------------

    def check_persistence(self) -> list[PersistenceProblem]:
        """Read the persistence settings now, remember the answer and return what is wrong.

        Raises :class:`~delegation_service.domain.errors.StoreUnavailable` when Redis does not answer
        (the last answer is kept). When persistence is required, a change for the worse is logged as an
        error naming the settings, and a change back as a notice.
        """
        problems = tuple(persistence_problems(self._client))
        previous, self._persistence = self._persistence, problems
        if self._require_persistence and problems != previous:
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

    @contextmanager
    def _call(self) -> Iterator[None]:
        """One store call: fails closed on any Redis failure, and on unsafe settings when required.

        Settings never read yet (Redis was down at start-up) are read first; settings found wrong fail
        the call without another round trip, until a health probe (:meth:`ping`) finds them fixed.
        """
        if self._require_persistence and self._persistence != ():
            problems = self._persistence
            if problems is None:
                problems = tuple(self.check_persistence())
            if problems:
                raise StoreUnavailable(
                    message="the token store is not configured for durable revocations (see the log)"
                )
        with _store_call():
            yield

    # -- helpers ----------------------------------------------------------------------------------------

    def _publish_event(
        self,
        kind: str,
        *,
        chain_id: str = "",
        token_id: str = "",
        subject: str = "",
        client_id: str = "",
        revoked_at: int,
        expires_at: int,
        now: int,
    ) -> RevocationEvent:
        # Written after the marker: the stream lives outside the chain's slot, and a failure in between
        # leaves the store revoked without an event, never an event without the revocation. A retried
        # revoke rewrites the marker (idempotent) and publishes again.
        fields: dict[str, str | int] = {
            "kind": kind,
            "chain_id": chain_id,
            "token_id": token_id,
            "subject": subject,
            "client_id": client_id,
            "revoked_at": revoked_at,
            "expires_at": expires_at,
        }
        oldest_kept = f"{max(now - self._event_retention, 0) * 1000}-0"
        args: list[str | int] = [oldest_kept, now + self._event_retention]
        for name, value in fields.items():
            args += [name, value]
        cursor = _text(self._publish(keys=[self._events_key], args=args))
        return RevocationEvent(cursor, kind, chain_id, token_id, subject, client_id, revoked_at, expires_at)

    def _mget(self, keys: Sequence[str]) -> list[Any]:
        if self._cluster:
            cluster = cast(RedisCluster, self._client)
            return list(_reply(cluster.mget_nonatomic(keys)))
        return list(_reply(self._client.mget(keys)))


@contextmanager
def _store_call() -> Iterator[None]:
    """Turn every Redis failure into ``StoreUnavailable``: callers fail closed on it.

    A reply that does not decode is treated the same way: the store cannot answer this question.
    """
    try:
        yield
    except (RedisError, RedisClusterException, OSError) as exc:
        raise StoreUnavailable() from exc
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise StoreUnavailable(message="the token store returned an unreadable value") from exc


def _reply(value: Any) -> Any:
    """A reply of the synchronous client.

    redis-py types every reply as "value or awaitable" (one signature for its sync and async clients);
    the clients given to this registry are synchronous.
    """
    return value


def _is_valid_chain_id(chain_id: str) -> bool:
    # An empty or braced id would break the hash tag and scatter the chain's keys over several slots.
    return bool(chain_id) and "{" not in chain_id and "}" not in chain_id


def _check_chain_id(chain_id: str) -> None:
    if not _is_valid_chain_id(chain_id):
        raise InvalidRequest(message="the chain id is malformed")


def _text(value: bytes | str | int) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def _check_lineage(root: TokenRecord, child: TokenRecord) -> None:
    """Refuse a pair the compact encoding cannot represent: it derives the child's shared facts from
    its root, so they must be equal (as SPEC §3 makes them), and the root must outlive the child."""
    if root.kind is not TokenKind.UPSTREAM or child.kind is not TokenKind.DELEGATED:
        raise ValueError("record_child takes an upstream root and a delegated child")
    shared = (root.chain_id, root.token_id, root.subject, root.bearer, root.client_id, root.issued_at)
    if shared != (
        child.chain_id,
        child.parent_token_id,
        child.subject,
        child.bearer,
        child.root_client_id,
        child.root_issued_at,
    ):
        raise ValueError("the child's chain, parent, subject, bearer or root facts differ from its root's")
    if child.expires_at > root.expires_at:
        raise ValueError("a child never outlives its root")


def _dumps(fields: list[object]) -> str:
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False)


def _encode_root(root: TokenRecord) -> str:
    # The token and chain ids are in the key, not repeated in the value.
    return _dumps(
        [
            _ROOT_V1,
            root.client_id,
            root.scopes,
            root.subject,
            root.bearer,
            root.issued_at,
            root.expires_at - root.issued_at,
        ]
    )


def _encode_child(child: TokenRecord) -> str:
    return _dumps(
        [
            _CHILD_V1,
            child.client_id,
            child.scopes,
            child.issued_at - child.root_issued_at,
            child.expires_at - child.issued_at,
        ]
    )


def _decode_root(chain_id: str, token_id: str, raw: bytes | str) -> TokenRecord | None:
    """The root record stored under ``token_id``; ``None`` if what is stored there is not a root."""
    fields = json.loads(raw)
    if fields[0] == _CHILD_V1:
        return None
    if fields[0] != _ROOT_V1:
        raise ValueError("unknown record format")
    _, client_id, scopes, subject, bearer, issued_at, lifetime = fields
    return TokenRecord(
        token_id=token_id,
        chain_id=chain_id,
        kind=TokenKind.UPSTREAM,
        parent_token_id=None,
        subject=str(subject),
        client_id=str(client_id),
        root_client_id=str(client_id),
        scopes=str(scopes),
        bearer=str(bearer),
        issued_at=int(issued_at),
        root_issued_at=int(issued_at),
        expires_at=int(issued_at) + int(lifetime),
    )


def _decode_record(
    chain_id: str, token_id: str, raw: bytes | str, root: TokenRecord | None
) -> TokenRecord | None:
    """A root, or a child completed from ``root``; ``None`` for a child whose root is gone.

    A child never outlives its root, so a missing root means the child has expired too: it decodes to
    nothing (and a check fails closed) rather than to half a record.
    """
    fields = json.loads(raw)
    if fields[0] == _ROOT_V1:
        return _decode_root(chain_id, token_id, raw)
    if fields[0] != _CHILD_V1:
        raise ValueError("unknown record format")
    if root is None:
        return None
    _, client_id, scopes, issued_offset, lifetime = fields
    issued_at = root.issued_at + int(issued_offset)
    return TokenRecord(
        token_id=token_id,
        chain_id=chain_id,
        kind=TokenKind.DELEGATED,
        parent_token_id=root.token_id,
        subject=root.subject,
        client_id=str(client_id),
        root_client_id=root.client_id,
        scopes=str(scopes),
        bearer=root.bearer,
        issued_at=issued_at,
        root_issued_at=root.issued_at,
        expires_at=issued_at + int(lifetime),
    )


def _decode_chain(
    chain_id: str, token_ids: Sequence[str], raws: Sequence[bytes | str | None]
) -> list[TokenRecord | None]:
    """The records of a chain, aligned with ``token_ids``: its one root first decoded, then the children."""
    root = None
    for token_id, raw in zip(token_ids, raws, strict=True):
        if raw is not None and (root := _decode_root(chain_id, token_id, raw)) is not None:
            break
    return [
        None if raw is None else _decode_record(chain_id, token_id, raw, root)
        for token_id, raw in zip(token_ids, raws, strict=True)
    ]


def _decode_horizons(keys: Sequence[HorizonKey], values: Sequence[Any]) -> dict[HorizonKey, int]:
    return {key: int(value) for key, value in zip(keys, values, strict=True) if value is not None}


def _decode_event(entry_id: bytes | str, raw_fields: Mapping[Any, Any]) -> RevocationEvent:
    fields = {_text(name): _text(value) for name, value in raw_fields.items()}
    return RevocationEvent(
        cursor=_text(entry_id),
        kind=fields["kind"],
        chain_id=fields["chain_id"],
        token_id=fields["token_id"],
        subject=fields["subject"],
        client_id=fields["client_id"],
        revoked_at=int(fields["revoked_at"]),
        expires_at=int(fields["expires_at"]),
    )


class UnsafePersistence(RuntimeError):
    """Raised at start-up when Redis is not configured for durable revocations and no override is set."""


def check_persistence_at_startup(registry: RedisRegistry, *, allow_unsafe: bool) -> None:
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


__all__ = [
    "REQUIRED_SETTINGS",
    "PersistenceProblem",
    "RedisClient",
    "RedisRegistry",
    "UnsafePersistence",
    "check_persistence_at_startup",
    "persistence_problems",
]
