"""The token registry over Redis: single node, Sentinel-managed or Cluster (SPEC §5).

Key layout (``<p>`` is the prefix; every key carries a TTL, so memory stays bounded under any load)::

    <p>:{<chain>}                hash of the chain's records: the root in four fields (``:i`` id, ``:u``
                                 subject, ``:r`` facts, ``:s`` scopes), one field per child named by its
                                 token id, and (indexed chains) ``:c``, each client's latest expiry;
                                 expires with the root (exp + leeway)
    <p>:{<chain>}:e              index of a chain that outgrew SMALL_CHAIN_FIELDS: ``:r`` and the
                                 children's ids scored by expiry (blast radius by ZCOUNT, pruning of
                                 expired records, chain views); expires with the root
    <p>:{<chain>}:rc             chain revoked marker, expires at the chain's exp + leeway
    <p>:{<chain>}:rt:<token_id>  token revoked marker, expires at the token's exp + leeway
    <p>:h:s:<subject>            subject horizon (epoch seconds), expires at horizon + retention
    <p>:h:c:<client_id>          client horizon (epoch seconds), expires at horizon + retention
    <p>:events                   stream of revocation events, trimmed to the event retention

One hash per chain rather than one key per token: a Redis key costs about a hundred bytes of its own
(dictionary entries, name, object header, TTL entry) before its value, and children never outlive their
root, so a chain's records can all expire with it. A chain of a root and a few children is that one key,
in Redis's compact listpack encoding (every value is kept short for it): about 180 bytes per tracked
token. A chain that outgrows SMALL_CHAIN_FIELDS gets an index by expiry; from then on every mint drops a
few records past their own expiry (plus leeway), oldest first, so a large chain holds its live tokens
(about 260 bytes each), not every token it ever had.

Every key of a chain shares the hash tag ``{<chain>}``, so every multi-key step on a chain lands on one
Cluster slot and stays atomic. Revoking writes one marker or one horizon whatever the chain's size;
checking a token reads a fixed number of keys; a chain's blast radius is a ZCOUNT and one field (a
small chain's, its at most SMALL_CHAIN_FIELDS fields).

Round trips on a single node: a check (Introspect, a caller's token) is one read-only script; minting is
one script that reads the root's markers and horizons and records the child only if the root is active;
each revocation is one script that writes the marker (or horizon) and publishes the event. On a cluster
the horizons and the event stream live in other slots than the chain: a check is one pipeline to the
nodes concerned, minting reads the horizons first (two round trips), and a revocation writes the marker,
then the event (two).

The leeway is added to every record and marker TTL because the service hosts' clocks and Redis's clock
differ: a marker that Redis dropped at the exact expiry could let a host whose clock lags see a revoked
token as alive again. TTLs are never shortened (``EXPIREAT ... GT``) for the same reason.

An acknowledged revocation must survive a Redis restart and must never be evicted, so the registry can
refuse to work on a Redis that is not configured for that (:func:`persistence_problems`): every master
needs ``appendonly yes`` and ``maxmemory-policy noeviction``. It must survive a failover too: with
``min_replicas_acked``, each revocation script is followed, on the same connection, by ``WAIT`` for that
many replicas, and a revocation they do not confirm in time fails closed (``StoreUnavailable``) instead
of being acknowledged (the write stays on the master; a retry is idempotent).
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

from delegation_service import deadlines
from delegation_service.domain.errors import CursorExpired, InvalidRequest, StoreUnavailable
from delegation_service.domain.ports import ChainRevocation, MintOutcome, RevocationEvent
from delegation_service.domain.revocation import (
    ChainSnapshot,
    HorizonKey,
    HorizonKind,
    StateSnapshot,
    TokenRecord,
    lineage_problem,
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
CHAIN_VIEW_MAX = 5000
"""Most records one chain view may ask for: they come back in one reply, and Redis runs one command at
a time, so a view of a whole 100,000-token chain would keep every other client waiting."""
PRUNE_PER_MINT = 16
"""Expired children whose records one mint drops, at most (an indexed chain): more than one, so pruning
keeps up with minting, and few, so a mint stays short."""
WAIT_MARGIN_MS = 20
"""Time kept back from the caller's deadline when it cuts ``WAIT`` short: for the reply to arrive."""
SMALL_CHAIN_FIELDS = 64
"""Most fields a chain's hash holds before the chain gets its index. Below it, the few operations that
need every record (blast radius, chain view) read the whole hash, at most this many fields; the hash
stays in Redis's compact listpack encoding (``hash-max-listpack-entries``, 128 by default), and the
chain costs one key."""

# The fields of a chain's hash that are not children (a child's field is its token id, which never
# starts with ":"): the root's token id, subject, facts and scopes, and (indexed chains) the clients.
# The root is spread over four fields, each short (Redis keeps a hash compact only while every value is
# at most ``hash-max-listpack-value``, 64 bytes by default).
_ROOT_ID, _ROOT_SUBJECT, _ROOT_FACTS, _ROOT_SCOPES = ":i", ":u", ":r", ":s"
_ROOT_FIELDS = (_ROOT_ID, _ROOT_SUBJECT, _ROOT_FACTS, _ROOT_SCOPES)
# First element of the root's facts and of every child's record: what it is and in which encoding, so a
# later release can still read the records of this one. The root's facts: [3, client id, issue time,
# lifetime, bearer ("" when it is "Per/<subject>")]. A child keeps only what differs from its root:
# [4, client id, scopes, issue time as an offset from the root's, lifetime].
_ROOT_V3 = 3
_CHILD_V3 = 4
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

# Appends an event (field/value pairs) to the stream, trims it by age and keeps its TTL ahead of its
# newest entry: when nothing was revoked for a whole retention period, every entry is stale. The
# revocation scripts below publish in the same script when the stream key is given (single node) and
# leave it to a second call when it is not (Cluster: the stream lives in another slot).
_PUBLISH_FUNCTION = """
local function publish(stream, min_id, stream_until, fields)
  local id = redis.call('XADD', stream, 'MINID', '~', min_id, '*', unpack(fields))
  extend(stream, stream_until)
  return id
end
"""

# Shared by the chain scripts: a chain's children straight from its hash (a chain without an index holds
# at most SMALL_CHAIN_FIELDS fields), as {ids, records}.
_CHILDREN_FUNCTION = """
local function children(records)
  local all = redis.call('HGETALL', records)
  local ids, values = {}, {}
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 1) ~= ':' then
      ids[#ids + 1] = all[i]
      values[#values + 1] = all[i + 1]
    end
  end
  return ids, values
end
"""

# KEYS: the chain's records, its index, its marker, the root's token marker, then (single node) the
#       root's horizons.
# ARGV: leeway, the root's id, subject, facts and scopes, its issue time and expiry, the child's id,
#       record, expiry and client, how many expired records to drop at most, how many fields a chain
#       holds before it gets an index, the number n of horizons, the n issue times they are compared
#       with, then (Cluster: horizons not in KEYS) the n horizon values read just before ('' for none).
# Returns: recorded (1 or 0), the stored root's id, subject, facts and scopes, root marker (1/0), chain
# marker (1/0), the horizons.
# Writes nothing unless the root is active: no marker, no horizon at or after the issue time it covers,
# not expired by Redis's clock, and a stored root (the first recorded) the same token as the one
# presented (only the scopes may differ). The child's record is written before the index that points at
# it; records already past their expiry are not written at all. A chain that outgrows
# SMALL_CHAIN_FIELDS gets its index: its live children scored by expiry (the expired ones are dropped on
# the way) and the latest expiry of each client; from then on every mint drops a few expired records.
_MINT = (
    _EXTEND
    + _CHILDREN_FUNCTION
    + """
local records, index = KEYS[1], KEYS[2]
local leeway = tonumber(ARGV[1])
local root_issued = tonumber(ARGV[6])
local root_exp = tonumber(ARGV[7])
local child_exp = tonumber(ARGV[10])
local n = tonumber(ARGV[14])
local now = tonumber(redis.call('TIME')[1])
local stored = redis.call('HMGET', records, ':i', ':u', ':r', ':s')
local root_revoked = redis.call('EXISTS', KEYS[4])
local chain_revoked = redis.call('EXISTS', KEYS[3])
local active = root_revoked == 0 and chain_revoked == 0 and root_exp > now
if stored[3] and (stored[1] ~= ARGV[2] or stored[2] ~= ARGV[3] or stored[3] ~= ARGV[4]) then
  active = false
end
local reply = {0, stored[1], stored[2], stored[3], stored[4], root_revoked, chain_revoked}
for i = 1, n do
  local horizon = false
  local given = ARGV[14 + n + i]
  if KEYS[4 + i] then
    horizon = redis.call('GET', KEYS[4 + i])
  elseif given and given ~= '' then
    horizon = given
  end
  if horizon and tonumber(horizon) >= tonumber(ARGV[14 + i]) then
    active = false
  end
  reply[7 + i] = horizon
end
if not active then
  return reply
end
if not stored[3] then
  redis.call('HSET', records, ':i', ARGV[2], ':u', ARGV[3], ':r', ARGV[4], ':s', ARGV[5])
  extend(records, root_exp + leeway)
end
if child_exp + leeway > now then
  redis.call('HSET', records, ARGV[8], ARGV[9])
  local clients = {}
  local indexed = redis.call('EXISTS', index) == 1
  if indexed then
    redis.call('ZADD', index, child_exp, ARGV[8])
    local raw = redis.call('HGET', records, ':c')
    if raw then
      clients = cjson.decode(raw)
    end
    for name, until_exp in pairs(clients) do
      if until_exp + leeway <= now then
        clients[name] = nil
      end
    end
    if (clients[ARGV[11]] or 0) < child_exp then
      clients[ARGV[11]] = child_exp
    end
  elseif redis.call('HLEN', records) > tonumber(ARGV[13]) then
    local members = {root_exp, ':r'}
    local ids, values = children(records)
    for i = 1, #ids do
      local child = cjson.decode(values[i])
      local expires = root_issued + child[4] + child[5]
      if expires + leeway <= now then
        redis.call('HDEL', records, ids[i])
      else
        members[#members + 1] = expires
        members[#members + 1] = ids[i]
        if (clients[child[2]] or 0) < expires then
          clients[child[2]] = expires
        end
      end
    end
    redis.call('ZADD', index, unpack(members))
    extend(index, root_exp + leeway)
    indexed = true
  end
  if indexed then
    redis.call('HSET', records, ':c', cjson.encode(clients))
    local expired = redis.call('ZRANGEBYSCORE', index, '-inf', now - leeway, 'LIMIT', 0, ARGV[12])
    if #expired > 0 then
      redis.call('HDEL', records, unpack(expired))
      redis.call('ZREM', index, unpack(expired))
    end
  end
end
reply[1] = 1
return reply
"""
)

# KEYS: the chain's records, its marker, the token's marker, then the token's horizons (single node).
# ARGV: the token's field in the records (":r" for the root).
# Returns: that field, the root's id, subject, facts and scopes, token marker (1/0), chain marker (1/0),
# the horizons. Flagged read-only: it runs on a full Redis too (a check needs no memory).
_SNAPSHOT = """#!lua flags=no-writes
local reply = redis.call('HMGET', KEYS[1], ARGV[1], ':i', ':u', ':r', ':s')
reply[6] = redis.call('EXISTS', KEYS[3])
reply[7] = redis.call('EXISTS', KEYS[2])
for i = 4, #KEYS do
  reply[i + 4] = redis.call('GET', KEYS[i])
end
return reply
"""

# KEYS: marker, then the stream (single node). ARGV: expire at (epoch seconds), then the stream's min id
# to keep, its expiry and the event's field/value pairs. Returns the event's id ('' when not published).
# Idempotent; never shortens a marker's life.
_MARK = (
    _EXTEND
    + _PUBLISH_FUNCTION
    + """
redis.call('SET', KEYS[1], '1', 'KEEPTTL')
extend(KEYS[1], ARGV[1])
if KEYS[2] then
  return publish(KEYS[2], ARGV[2], ARGV[3], {unpack(ARGV, 4)})
end
return ''
"""
)

# KEYS: horizon, then the stream (single node). ARGV: horizon (epoch seconds), retention (seconds), then
# the stream's min id, its expiry and the event's field/value pairs (the horizon in force is added).
# A horizon never moves back: the larger of the stored and the requested value wins and is returned,
# with the event's id ('' when not published).
_HORIZON = (
    _EXTEND
    + _PUBLISH_FUNCTION
    + """
local at = tonumber(ARGV[1])
local stored = redis.call('GET', KEYS[1])
if stored and tonumber(stored) >= at then
  at = tonumber(stored)
else
  redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
end
local retention = tonumber(ARGV[2])
extend(KEYS[1], at + retention)
local id = ''
if KEYS[2] then
  local fields = {unpack(ARGV, 5)}
  table.insert(fields, 'revoked_at')
  table.insert(fields, string.format('%d', at))
  table.insert(fields, 'expires_at')
  table.insert(fields, string.format('%d', at + retention))
  id = publish(KEYS[2], ARGV[3], ARGV[4], fields)
end
return {at, id}
"""
)

# KEYS: the chain's records, its index, its marker, then the stream (single node).
# ARGV: dry run ('1' or '0'), leeway, retention, then the stream's min id, its expiry and the event's
#       field/value pairs (its expiry is added).
# Returns nil, writing nothing, when the store holds neither a record nor a marker of the chain; else
# {marker set before (1/0), Redis's now, expires at, event id, the root's id, subject, facts and scopes,
# indexed (1/0), then for an indexed chain its unexpired tokens (ZCOUNT) and clients, for a small one
# its children's ids and records}. The marker goes first, until the root's expiry plus leeway (for the
# retention when no root record is left); the blast radius is then read in O(log n) whatever the
# chain's size.
_REVOKE_KNOWN_CHAIN = (
    _EXTEND
    + _PUBLISH_FUNCTION
    + _CHILDREN_FUNCTION
    + """
local records, index = KEYS[1], KEYS[2]
local now = tonumber(redis.call('TIME')[1])
local already = redis.call('EXISTS', KEYS[3])
local root = redis.call('HMGET', records, ':i', ':u', ':r', ':s')
if already == 0 and not root[3] then
  return false
end
local expires_at = now + tonumber(ARGV[3])
if root[3] then
  local facts = cjson.decode(root[3])
  expires_at = facts[3] + facts[4]
end
local id = ''
if ARGV[1] ~= '1' then
  redis.call('SET', KEYS[3], '1', 'KEEPTTL')
  extend(KEYS[3], expires_at + tonumber(ARGV[2]))
  if KEYS[4] then
    local fields = {unpack(ARGV, 6)}
    table.insert(fields, 'expires_at')
    table.insert(fields, string.format('%d', expires_at))
    id = publish(KEYS[4], ARGV[4], ARGV[5], fields)
  end
end
local reply = {already, now, expires_at, id, root[1], root[2], root[3], root[4]}
if redis.call('EXISTS', index) == 1 then
  reply[9] = 1
  reply[10] = redis.call('ZCOUNT', index, '(' .. now, '+inf')
  reply[11] = redis.call('HGET', records, ':c')
else
  reply[9] = 0
  reply[10], reply[11] = children(records)
end
return reply
"""
)

# KEYS: the chain's records, its index, its marker. ARGV: how many children at most, leeway.
# Returns {chain marker (1/0), Redis's now, the root's id, subject, facts and scopes, ids, records}: for
# an indexed chain the live children that expire last, for a small one all its children.
_CHAIN_VIEW = (
    """#!lua flags=no-writes
"""
    + _CHILDREN_FUNCTION
    + """
local records, index = KEYS[1], KEYS[2]
local now = tonumber(redis.call('TIME')[1])
local root = redis.call('HMGET', records, ':i', ':u', ':r', ':s')
local ids, values = {}, {}
if redis.call('EXISTS', index) == 1 then
  local live_after = '(' .. (now - tonumber(ARGV[2]))
  local found = redis.call('ZREVRANGEBYSCORE', index, '+inf', live_after, 'LIMIT', 0, tonumber(ARGV[1]) + 1)
  for i = 1, #found do
    if found[i] ~= ':r' then
      ids[#ids + 1] = found[i]
    end
  end
  if #ids > 0 then
    values = redis.call('HMGET', records, unpack(ids))
  end
else
  ids, values = children(records)
end
return {redis.call('EXISTS', KEYS[3]), now, root[1], root[2], root[3], root[4], ids, values}
"""
)

# KEYS: stream. ARGV: min id to keep, expire at, then field/value pairs. Returns the new entry's id.
# Used on a Cluster, after the marker was written in the chain's slot.
_PUBLISH = (
    _EXTEND
    + _PUBLISH_FUNCTION
    + """
return publish(KEYS[1], ARGV[1], ARGV[2], {unpack(ARGV, 3)})
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

    With ``min_replicas_acked=N`` (single node or Sentinel; not on a cluster) every revocation is
    acknowledged only once ``WAIT N replica_ack_timeout_ms`` confirms N replicas hold it (the wait is cut
    to what is left of the caller's deadline); otherwise it raises
    :class:`~delegation_service.domain.errors.StoreUnavailable`.

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
        min_replicas_acked: int = 0,
        replica_ack_timeout_ms: int = 100,
    ) -> None:
        if cluster != isinstance(client, RedisCluster):
            raise ValueError("cluster=True goes with a RedisCluster client, cluster=False with any other")
        if not prefix or "{" in prefix or "}" in prefix:
            raise ValueError("the key prefix must be non-empty and free of hash-tag braces")
        if leeway_seconds < 0 or horizon_retention_seconds <= 0 or event_retention_seconds <= 0:
            raise ValueError("the leeway must be >= 0 and the retentions > 0")
        if min_replicas_acked < 0 or replica_ack_timeout_ms <= 0:
            raise ValueError("min_replicas_acked must be >= 0 and replica_ack_timeout_ms > 0")
        if min_replicas_acked and cluster:
            raise ValueError("min_replicas_acked needs a single node or Sentinel, not a cluster")
        self._min_replicas = min_replicas_acked
        self._replica_ack_timeout_ms = replica_ack_timeout_ms
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
        self._mint: Script = client.register_script(_MINT)
        self._snapshot: Script = client.register_script(_SNAPSHOT)
        self._mark: Script = client.register_script(_MARK)
        self._horizon: Script = client.register_script(_HORIZON)
        self._revoke_known: Script = client.register_script(_REVOKE_KNOWN_CHAIN)
        self._chain_view: Script = client.register_script(_CHAIN_VIEW)
        self._publish: Script = client.register_script(_PUBLISH)

    # -- keys -------------------------------------------------------------------------------------------

    def _chain_key(self, chain_id: str, suffix: str) -> str:
        return f"{self._prefix}:{{{chain_id}}}:{suffix}"

    def _records_key(self, chain_id: str) -> str:
        # The chain's one key in the common case: no suffix, so its name is as short as can be.
        return f"{self._prefix}:{{{chain_id}}}"

    def _index_key(self, chain_id: str) -> str:
        return self._chain_key(chain_id, "e")

    def _chain_marker_key(self, chain_id: str) -> str:
        return self._chain_key(chain_id, "rc")

    def _token_marker_key(self, chain_id: str, token_id: str) -> str:
        return self._chain_key(chain_id, f"rt:{token_id}")

    def _horizon_key(self, key: HorizonKey) -> str:
        return f"{self._prefix}:h:{_HORIZON_CODES[key.kind]}:{key.value}"

    @property
    def _events_key(self) -> str:
        return f"{self._prefix}:events"

    # -- the port -----------------------------------------------------------------------------------------

    def snapshot(self, expected: TokenRecord) -> StateSnapshot:
        """Read the record (with its root's), both markers and the horizons of ``expected``'s token.

        One read-only script on a single node; on a cluster, one pipeline: the chain's keys (one slot)
        and the horizons (other slots) go to their nodes together.
        """
        _check_chain_id(expected.chain_id)
        upstream = expected.kind is TokenKind.UPSTREAM
        if not upstream and not _is_child_field(expected.token_id):
            return StateSnapshot(record=None, token_revoked=False, chain_revoked=False, horizons={})
        field = _ROOT_FACTS if upstream else expected.token_id
        horizon_keys = expected.horizon_keys()
        chain_keys = [
            self._records_key(expected.chain_id),
            self._chain_marker_key(expected.chain_id),
            self._token_marker_key(expected.chain_id, expected.token_id),
        ]
        with self._call():
            if self._cluster:
                values = self._cluster_snapshot(chain_keys, field, horizon_keys)
            else:
                keys = [*chain_keys, *(self._horizon_key(key) for key in horizon_keys)]
                values = list(_reply(self._snapshot(keys=keys, args=[field])))
            raw_record, *root_fields = values[:5]
            token_marker, chain_marker = values[5:7]
            root = _decode_root(expected.chain_id, root_fields)
            record = None
            if raw_record is not None:
                record = root if upstream else _decode_child(expected.chain_id, field, raw_record, root)
            return StateSnapshot(
                record=record,
                token_revoked=int(token_marker) == 1,
                chain_revoked=int(chain_marker) == 1,
                horizons=_decode_horizons(horizon_keys, values[7:]),
            )

    def mint(self, root: TokenRecord, child: TokenRecord) -> MintOutcome:
        """Judge ``root`` and record ``child`` (and ``root`` unless known) in one script on the chain's slot.

        On a single node the root's horizons are read by the script itself: one round trip. On a cluster
        they live in other slots and are read first (one MGET), then handed to the script: a horizon set
        in between covers the child anyway, as it covers its root's issue time. Raises ``ValueError``
        when ``child`` is not a child of ``root`` (the compact encoding takes the shared facts from the
        root) or its token id could be mistaken for one of the hash's own fields.
        """
        problem = lineage_problem(root, child)
        if problem is not None:
            raise ValueError(problem)
        if not _is_child_field(child.token_id):
            raise ValueError("a child's token id must be non-empty and must not start with ':'")
        chain_id = child.chain_id
        _check_chain_id(chain_id)
        checks = root.horizon_checks()
        horizon_keys = [self._horizon_key(key) for key, _ in checks]
        keys = [
            self._records_key(chain_id),
            self._index_key(chain_id),
            self._chain_marker_key(chain_id),
            self._token_marker_key(chain_id, root.token_id),
        ]
        args: list[str | int] = [
            self._leeway,
            *_encode_root(root),
            root.issued_at,
            root.expires_at,
            child.token_id,
            _encode_child(child),
            child.expires_at,
            child.client_id,
            PRUNE_PER_MINT,
            SMALL_CHAIN_FIELDS,
            len(checks),
            *(issued_at for _, issued_at in checks),
        ]
        with self._call():
            if self._cluster:
                args += ["" if value is None else _text(value) for value in self._mget(horizon_keys)]
            else:
                keys += horizon_keys
            reply = list(_reply(self._mint(keys=keys, args=args)))
            snapshot = StateSnapshot(
                record=_decode_root(chain_id, reply[1:5]),
                token_revoked=int(reply[5]) == 1,
                chain_revoked=int(reply[6]) == 1,
                horizons=_decode_horizons([key for key, _ in checks], reply[7:]),
            )
            return MintOutcome(snapshot, recorded=int(reply[0]) == 1)

    def revoke_token(self, chain_id: str, token_id: str, expires_at: int, now: int) -> RevocationEvent:
        """Set the token's marker until ``expires_at`` (plus leeway) and publish the event."""
        _check_chain_id(chain_id)
        with self._call():
            return self._mark_and_publish(
                self._token_marker_key(chain_id, token_id),
                expires_at + self._leeway,
                RevocationEvent("", "token", chain_id, token_id, "", "", now, expires_at),
            )

    def revoke_chain(self, chain_id: str, expires_at: int, now: int) -> RevocationEvent:
        """Set the chain's marker until ``expires_at`` (plus leeway) and publish the event.

        One write whatever the chain's size: checks consult the marker, nothing fans out.
        """
        _check_chain_id(chain_id)
        with self._call():
            return self._mark_and_publish(
                self._chain_marker_key(chain_id),
                expires_at + self._leeway,
                RevocationEvent("", "chain", chain_id, "", "", "", now, expires_at),
            )

    def revoke_known_chain(self, chain_id: str, now: int, *, dry_run: bool = False) -> ChainRevocation | None:
        """Mark a chain this store knows revoked, then read its blast radius, in one script on its slot.

        The marker lives until the root's expiry plus leeway (for the horizon retention when no root
        record is left); the count is a ZCOUNT of the chain's index and the clients one field (a chain
        without an index, at most SMALL_CHAIN_FIELDS fields, is read whole): the same cost for 100
        children or 100,000. On a single node the event is published by the same script; on a cluster
        right after it.
        """
        if not _is_valid_chain_id(chain_id):
            return None
        keys = [self._records_key(chain_id), self._index_key(chain_id), self._chain_marker_key(chain_id)]
        args: list[str | int] = ["1" if dry_run else "0", self._leeway, self._horizon_retention]
        event = RevocationEvent("", "chain", chain_id, "", "", "", now, 0)
        publish_here = not dry_run and not self._cluster
        if publish_here:
            keys.append(self._events_key)
            args += [*self._stream_args(now), *_event_fields(event, without=("expires_at",))]
        with self._call():
            if dry_run:
                reply = _reply(self._revoke_known(keys=keys, args=args))
            else:
                reply = self._revocation_script(self._revoke_known, keys, args)
            if reply is None:
                return None
            already, redis_now, expires_at, cursor, *root_fields = reply[:8]
            indexed, counted, clients_or_records = reply[8:11]
            event = RevocationEvent(_text(cursor), "chain", chain_id, "", "", "", now, int(expires_at))
            if not dry_run and not publish_here:
                event = self._publish_event(event, now)
            root = _decode_root(chain_id, root_fields)
            live: dict[str, int] = {}  # client id -> latest expiry among its unexpired tokens
            if root is not None:
                live[root.client_id] = root.expires_at
            if int(indexed) == 1:
                count = int(counted)
                if clients_or_records is not None:
                    for name, until in json.loads(clients_or_records).items():
                        live[name] = max(live.get(name, 0), int(until))
            else:
                children = _decode_children(chain_id, counted, clients_or_records, root)
                unexpired = [r for r in ([root] if root else []) + children if r.expires_at > int(redis_now)]
                count = len(unexpired)
                for child in children:
                    live[child.client_id] = max(live.get(child.client_id, 0), child.expires_at)
            clients = {name for name, until in live.items() if name and until > int(redis_now)}
            return ChainRevocation(
                already_revoked=int(already) == 1,
                unexpired_token_count=count,
                client_ids=tuple(sorted(clients)),
                event=None if dry_run else event,
            )

    def revoke_horizon(self, key: HorizonKey, at: int, now: int) -> RevocationEvent:
        """Move the horizon to ``at`` unless it is already later, and publish the horizon in force.

        The event's ``revoked_at`` is the horizon itself (tokens issued at or before it are revoked), as
        the ``WatchRevocations`` response documents.
        """
        subject = key.value if key.kind is HorizonKind.SUBJECT else ""
        client_id = key.value if key.kind is HorizonKind.CLIENT else ""
        event = RevocationEvent("", _HORIZON_EVENT_KINDS[key.kind], "", "", subject, client_id, at, 0)
        keys = [self._horizon_key(key)]
        args: list[str | int] = [at, self._horizon_retention]
        if not self._cluster:
            keys.append(self._events_key)
            args += [*self._stream_args(now), *_event_fields(event, without=("revoked_at", "expires_at"))]
        with self._call():
            effective, cursor = self._revocation_script(self._horizon, keys, args)
            event = RevocationEvent(
                _text(cursor),
                event.kind,
                "",
                "",
                subject,
                client_id,
                int(effective),
                int(effective) + self._horizon_retention,
            )
            return self._publish_event(event, now) if self._cluster else event

    def record(self, chain_id: str, token_id: str) -> TokenRecord | None:
        """The record of ``token_id`` in ``chain_id`` (root or child), read with one HMGET."""
        if not _is_valid_chain_id(chain_id) or not token_id:
            return None
        field = token_id if _is_child_field(token_id) else _ROOT_FACTS
        with self._call():
            raw, *root_fields = _reply(
                self._client.hmget(self._records_key(chain_id), [field, *_ROOT_FIELDS])
            )
            root = _decode_root(chain_id, root_fields)
            if root is not None and root.token_id == token_id:
                return root
            if raw is None or field == _ROOT_FACTS:
                return None
            return _decode_child(chain_id, token_id, raw, root)

    def chain(self, chain_id: str, limit: int) -> ChainSnapshot | None:
        """The chain's root and up to ``limit - 1`` children (those expiring last), its markers and the
        horizons they need; ``None`` if unknown.

        Not a single atomic read (a chain view needs no such guarantee): the records in one read-only
        script on the chain's slot, then their token markers (one MGET on that slot), then the horizons.
        ``limit`` is capped at :data:`CHAIN_VIEW_MAX`, so no reply grows with the chain.
        """
        if not _is_valid_chain_id(chain_id):
            return None
        limit = max(1, min(limit, CHAIN_VIEW_MAX))
        keys = [self._records_key(chain_id), self._index_key(chain_id), self._chain_marker_key(chain_id)]
        with self._call():
            reply = _reply(self._chain_view(keys=keys, args=[limit, self._leeway]))
            marker, redis_now, *root_fields = reply[:6]
            root = _decode_root(chain_id, root_fields)
            children = [
                child
                for child in _decode_children(chain_id, reply[6], reply[7], root)
                if child.expires_at + self._leeway > int(redis_now)
            ]
            children.sort(key=lambda child: (-child.expires_at, child.token_id))
            records = ([root] if root is not None else []) + children
            records = records[:limit]
            chain_revoked = int(marker) == 1
            if not records and not chain_revoked:
                return None
            markers = (
                _reply(self._client.mget([self._token_marker_key(chain_id, r.token_id) for r in records]))
                if records
                else []
            )
            revoked = frozenset(
                record.token_id for record, marked in zip(records, markers, strict=True) if marked is not None
            )
            horizon_keys = tuple(dict.fromkeys(key for record in records for key in record.horizon_keys()))
            horizon_values = (
                self._mget([self._horizon_key(key) for key in horizon_keys]) if horizon_keys else []
            )
            return ChainSnapshot(
                chain_id=chain_id,
                records=tuple(records),
                chain_revoked=chain_revoked,
                revoked_token_ids=revoked,
                horizons=_decode_horizons(horizon_keys, horizon_values),
            )

    def events(self, after: str | None, limit: int) -> Sequence[RevocationEvent]:
        """Up to ``limit`` events after cursor ``after`` (a stream entry id), oldest first.

        Raises :class:`~delegation_service.domain.errors.InvalidRequest` for a cursor this store never
        gave out, and :class:`~delegation_service.domain.errors.CursorExpired` when the entry of
        ``after`` was trimmed: entries after it may have gone too (the stream is trimmed oldest first).
        """
        if after and not _STREAM_ID.fullmatch(after):
            raise InvalidRequest(message="the revocation cursor is malformed")
        if limit <= 0:
            return []
        if not after:
            with self._call():
                entries = _reply(self._client.xrange(self._events_key, "-", "+", count=limit))
                return [_decode_event(entry_id, fields) for entry_id, fields in entries]
        with self._call():
            # One round trip: the oldest retained entry, and the page after the cursor.
            pipe = self._client.pipeline(transaction=False)
            pipe.xrange(self._events_key, "-", "+", count=1)
            pipe.xrange(self._events_key, f"({after}", "+", count=limit)
            oldest, entries = (_reply(reply) for reply in pipe.execute())
        if not oldest or _stream_order(after) < _stream_order(_text(oldest[0][0])):
            raise CursorExpired()
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

    def _stream_args(self, now: int) -> list[str | int]:
        """The stream's oldest id to keep and its expiry, for a publish at ``now``."""
        return [f"{max(now - self._event_retention, 0) * 1000}-0", now + self._event_retention]

    def _mark_and_publish(self, marker_key: str, until: int, event: RevocationEvent) -> RevocationEvent:
        """Set a marker, then publish ``event``: one script on a single node, two calls on a cluster."""
        if self._cluster:
            self._mark(keys=[marker_key], args=[until])
            return self._publish_event(event, event.revoked_at)
        args = [until, *self._stream_args(event.revoked_at), *_event_fields(event)]
        cursor = _text(self._revocation_script(self._mark, [marker_key, self._events_key], args))
        return _with_cursor(event, cursor)

    def _revocation_script(self, script: Script, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        """Run a revocation script (single node); with ``min_replicas_acked``, return its reply only once
        ``WAIT`` confirms that many replicas, else raise ``StoreUnavailable``.

        ``WAIT`` counts the replicas that hold every write of *its own connection*, so it goes in one
        pipeline with the script: pooled connections would otherwise let it wait for another's writes.
        """
        if not self._min_replicas:
            return _reply(script(keys=keys, args=args))
        pipeline = cast(redis.Redis, self._client).pipeline(transaction=False)
        script(keys=keys, args=args, client=pipeline)
        pipeline.execute_command("WAIT", self._min_replicas, self._wait_ms())  # type: ignore[no-untyped-call]
        reply, acked = pipeline.execute()
        if int(acked) < self._min_replicas:
            raise StoreUnavailable(message="the revocation was not confirmed by enough Redis replicas")
        return reply

    def _wait_ms(self) -> int:
        """``WAIT``'s timeout: the configured one, cut to what is left of the caller's deadline.

        Never 0, which would make ``WAIT`` block until the replicas answer, however long.
        """
        left = deadlines.remaining()
        if left is None:
            return self._replica_ack_timeout_ms
        return max(1, min(self._replica_ack_timeout_ms, int(left * 1000) - WAIT_MARGIN_MS))

    def _publish_event(self, event: RevocationEvent, now: int) -> RevocationEvent:
        """Publish ``event`` on its own (a cluster, where the stream lives in another slot).

        Written after the marker: a failure in between leaves the store revoked without an event, never
        an event without the revocation. A retried revoke rewrites the marker (idempotent) and
        publishes again.
        """
        args = [*self._stream_args(now), *_event_fields(event)]
        cursor = _text(_reply(self._publish(keys=[self._events_key], args=args)))
        return _with_cursor(event, cursor)

    def _cluster_snapshot(
        self, chain_keys: Sequence[str], field: str, horizons: Sequence[HorizonKey]
    ) -> list[Any]:
        """The snapshot script's reply, from a cluster in one pipeline: the chain's node and the
        horizons' nodes at once."""
        records, chain_marker, token_marker = chain_keys
        pipeline = cast(RedisCluster, self._client).pipeline()  # type: ignore[no-untyped-call]
        pipeline.hmget(records, [field, *_ROOT_FIELDS])
        pipeline.exists(token_marker)
        pipeline.exists(chain_marker)
        for key in horizons:
            pipeline.get(self._horizon_key(key))
        fields, *rest = pipeline.execute()
        return [*fields, *rest]

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


def _stream_order(entry_id: str) -> tuple[int, int]:
    """A stream entry id ``<ms>-<seq>`` as a tuple that sorts as Redis sorts ids."""
    milliseconds, sequence = entry_id.split("-")
    return int(milliseconds), int(sequence)


def _text(value: bytes | str | int) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def _is_child_field(token_id: str) -> bool:
    # A child's field in the chain's hash is its token id; the hash's own fields start with ":".
    return bool(token_id) and not token_id.startswith(":")


def _event_fields(event: RevocationEvent, without: Sequence[str] = ()) -> list[str | int]:
    """The event's stream entry as field/value pairs (the script adds those in ``without``)."""
    fields: dict[str, str | int] = {
        "kind": event.kind,
        "chain_id": event.chain_id,
        "token_id": event.token_id,
        "subject": event.subject,
        "client_id": event.client_id,
        "revoked_at": event.revoked_at,
        "expires_at": event.expires_at,
    }
    pairs: list[str | int] = []
    for name, value in fields.items():
        if name not in without:
            pairs += [name, value]
    return pairs


def _with_cursor(event: RevocationEvent, cursor: str) -> RevocationEvent:
    return RevocationEvent(
        cursor,
        event.kind,
        event.chain_id,
        event.token_id,
        event.subject,
        event.client_id,
        event.revoked_at,
        event.expires_at,
    )


def _dumps(fields: list[object]) -> str:
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False)


def _encode_root(root: TokenRecord) -> tuple[str, str, str, str]:
    """The root's fields: token id, subject, facts and scopes (the chain id is in the key)."""
    bearer = "" if root.bearer == f"Per/{root.subject}" else root.bearer
    facts = _dumps([_ROOT_V3, root.client_id, root.issued_at, root.expires_at - root.issued_at, bearer])
    return root.token_id, root.subject, facts, root.scopes


def _encode_child(child: TokenRecord) -> str:
    return _dumps(
        [
            _CHILD_V3,
            child.client_id,
            child.scopes,
            child.issued_at - child.root_issued_at,
            child.expires_at - child.issued_at,
        ]
    )


def _decode_root(chain_id: str, fields: Sequence[bytes | str | None]) -> TokenRecord | None:
    """The root kept in a chain's hash (its id, subject, facts and scopes), or ``None`` if there is none."""
    raw_id, raw_subject, raw_facts, raw_scopes = fields
    if raw_facts is None:
        return None
    if raw_id is None or raw_subject is None or raw_scopes is None:
        raise ValueError("incomplete root record")
    version, client_id, issued_at, lifetime, bearer = json.loads(raw_facts)
    if version != _ROOT_V3:
        raise ValueError("unknown root record format")
    subject = _text(raw_subject)
    return TokenRecord(
        token_id=_text(raw_id),
        chain_id=chain_id,
        kind=TokenKind.UPSTREAM,
        parent_token_id=None,
        subject=subject,
        client_id=str(client_id),
        root_client_id=str(client_id),
        scopes=_text(raw_scopes),
        bearer=str(bearer) or f"Per/{subject}",
        issued_at=int(issued_at),
        root_issued_at=int(issued_at),
        expires_at=int(issued_at) + int(lifetime),
    )


def _decode_child(
    chain_id: str, token_id: str, raw: bytes | str, root: TokenRecord | None
) -> TokenRecord | None:
    """A child completed from its ``root``; ``None`` when the root is gone.

    A child never outlives its root, so a missing root means the child has expired too: it decodes to
    nothing (and a check fails closed) rather than to half a record.
    """
    version, client_id, scopes, issued_offset, lifetime = json.loads(raw)
    if version != _CHILD_V3:
        raise ValueError("unknown child record format")
    if root is None:
        return None
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


def _decode_children(
    chain_id: str, ids: Sequence[bytes | str], raws: Sequence[bytes | str | None], root: TokenRecord | None
) -> list[TokenRecord]:
    """The children among ``ids`` whose records are there, completed from ``root``."""
    children = []
    for token_id, raw in zip(ids, raws, strict=True):
        child = None if raw is None else _decode_child(chain_id, _text(token_id), raw, root)
        if child is not None:
            children.append(child)
    return children


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
