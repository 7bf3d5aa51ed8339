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

The scripts are in ``lua/`` (:mod:`.scripts`), the encoding of records and events in :mod:`.records`, the
persistence checks in :mod:`.durability`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import RedisClusterException, RedisError

from delegation_service import deadlines
from delegation_service.adapters.redis.calls import RedisClient, result, store_call, text
from delegation_service.adapters.redis.durability import DurabilityCheck, PersistenceProblem
from delegation_service.adapters.redis.records import (
    ROOT_FACTS,
    ROOT_FIELDS,
    decode_child,
    decode_children,
    decode_event,
    decode_horizons,
    decode_known_root,
    decode_root,
    encode_child,
    encode_root,
    event_fields,
    is_child_field,
    with_cursor,
)
from delegation_service.adapters.redis.scripts import Scripts
from delegation_service.domain.errors import CursorExpired, InvalidRequest, StoreUnavailable
from delegation_service.domain.ports import ChainRevocation, MintOutcome, RevocationEvent
from delegation_service.domain.revocation import (
    ChainSnapshot,
    HorizonKey,
    HorizonKind,
    RevocationKind,
    StateSnapshot,
    TokenRecord,
    lineage_problem,
)
from delegation_service.domain.tokens import TokenKind

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
_HORIZON_CODES = {HorizonKind.SUBJECT: "s", HorizonKind.CLIENT: "c"}
_STREAM_ID = re.compile(r"\d{1,20}-\d{1,20}")


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
        self._durability = DurabilityCheck(client, required=require_persistence)
        self._scripts = Scripts.register(client)

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
        if not upstream and not is_child_field(expected.token_id):
            return StateSnapshot(record=None, token_revoked=False, chain_revoked=False, horizons={})
        field = ROOT_FACTS if upstream else expected.token_id
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
                values = list(result(self._scripts.snapshot(keys=keys, args=[field])))
            raw_record, *root_fields = values[:5]
            token_marker, chain_marker = values[5:7]
            root = decode_root(expected.chain_id, root_fields)
            record = None
            if raw_record is not None:
                record = root if upstream else decode_child(expected.chain_id, field, raw_record, root)
            return StateSnapshot(
                record=record,
                token_revoked=int(token_marker) == 1,
                chain_revoked=int(chain_marker) == 1,
                horizons=decode_horizons(horizon_keys, values[7:]),
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
        if not is_child_field(child.token_id):
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
        encoded_root = encode_root(root)
        args: list[str | int] = [
            self._leeway,
            *encoded_root,
            root.issued_at,
            root.expires_at,
            child.token_id,
            encode_child(child),
            child.expires_at,
            child.client_id,
            PRUNE_PER_MINT,
            SMALL_CHAIN_FIELDS,
            len(checks),
            *(issued_at for _, issued_at in checks),
        ]
        with self._call():
            if self._cluster:
                args += ["" if value is None else text(value) for value in self._mget(horizon_keys)]
            else:
                keys += horizon_keys
            reply = list(result(self._scripts.mint(keys=keys, args=args)))
            snapshot = StateSnapshot(
                record=decode_known_root(chain_id, reply[1:5], root, encoded_root),
                token_revoked=int(reply[5]) == 1,
                chain_revoked=int(reply[6]) == 1,
                horizons=decode_horizons([key for key, _ in checks], reply[7:]),
            )
            return MintOutcome(snapshot, recorded=int(reply[0]) == 1)

    def revoke_token(self, chain_id: str, token_id: str, expires_at: int, now: int) -> RevocationEvent:
        """Set the token's marker until ``expires_at`` (plus leeway) and publish the event."""
        _check_chain_id(chain_id)
        with self._call():
            return self._mark_and_publish(
                self._token_marker_key(chain_id, token_id),
                expires_at + self._leeway,
                RevocationEvent("", RevocationKind.TOKEN, chain_id, token_id, "", "", now, expires_at),
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
                RevocationEvent("", RevocationKind.CHAIN, chain_id, "", "", "", now, expires_at),
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
        event = RevocationEvent("", RevocationKind.CHAIN, chain_id, "", "", "", now, 0)
        publish_here = not dry_run and not self._cluster
        if publish_here:
            keys.append(self._events_key)
            args += [*self._stream_args(now), *event_fields(event, without=("expires_at",))]
        with self._call():
            if dry_run:
                reply = result(self._scripts.revoke_known_chain(keys=keys, args=args))
            else:
                reply = self._revocation_script(self._scripts.revoke_known_chain, keys, args)
            if reply is None:
                return None
            already, redis_now, expires_at, cursor, *root_fields = reply[:8]
            indexed, counted, clients_or_records = reply[8:11]
            event = RevocationEvent(
                text(cursor), RevocationKind.CHAIN, chain_id, "", "", "", now, int(expires_at)
            )
            if not dry_run and not publish_here:
                event = self._publish_event(event, now)
            root = decode_root(chain_id, root_fields)
            live: dict[str, int] = {}  # client id -> latest expiry among its unexpired tokens
            if root is not None:
                live[root.client_id] = root.expires_at
            if int(indexed) == 1:
                count = int(counted)
                if clients_or_records is not None:
                    for name, until in json.loads(clients_or_records).items():
                        live[name] = max(live.get(name, 0), int(until))
            else:
                children = decode_children(chain_id, counted, clients_or_records, root)
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
        event = RevocationEvent("", key.kind.revocation_kind, "", "", subject, client_id, at, 0)
        keys = [self._horizon_key(key)]
        args: list[str | int] = [at, self._horizon_retention]
        if not self._cluster:
            keys.append(self._events_key)
            args += [*self._stream_args(now), *event_fields(event, without=("revoked_at", "expires_at"))]
        with self._call():
            effective, cursor = self._revocation_script(self._scripts.horizon, keys, args)
            event = RevocationEvent(
                text(cursor),
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
        field = token_id if is_child_field(token_id) else ROOT_FACTS
        with self._call():
            raw, *root_fields = result(self._client.hmget(self._records_key(chain_id), [field, *ROOT_FIELDS]))
            root = decode_root(chain_id, root_fields)
            if root is not None and root.token_id == token_id:
                return root
            if raw is None or field == ROOT_FACTS:
                return None
            return decode_child(chain_id, token_id, raw, root)

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
            reply = result(self._scripts.chain_view(keys=keys, args=[limit, self._leeway]))
            marker, redis_now, *root_fields = reply[:6]
            root = decode_root(chain_id, root_fields)
            children = [
                child
                for child in decode_children(chain_id, reply[6], reply[7], root)
                if child.expires_at + self._leeway > int(redis_now)
            ]
            children.sort(key=lambda child: (-child.expires_at, child.token_id))
            records = ([root] if root is not None else []) + children
            records = records[:limit]
            chain_revoked = int(marker) == 1
            if not records and not chain_revoked:
                return None
            markers = (
                result(self._client.mget([self._token_marker_key(chain_id, r.token_id) for r in records]))
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
                horizons=decode_horizons(horizon_keys, horizon_values),
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
                entries = result(self._client.xrange(self._events_key, "-", "+", count=limit))
                return [decode_event(entry_id, fields) for entry_id, fields in entries]
        with self._call():
            # One round trip: the oldest retained entry, and the page after the cursor.
            pipe = self._client.pipeline(transaction=False)
            pipe.xrange(self._events_key, "-", "+", count=1)
            pipe.xrange(self._events_key, f"({after}", "+", count=limit)
            oldest, entries = (result(reply) for reply in pipe.execute())
        if not oldest or _stream_order(after) < _stream_order(text(oldest[0][0])):
            raise CursorExpired()
        return [decode_event(entry_id, fields) for entry_id, fields in entries]

    def ping(self) -> bool:
        """Whether Redis answers right now (and, when required, is configured safely); never raises."""
        try:
            if self._durability.required and self._durability.check():
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
        """Read the persistence settings now, remember the answer and return what is wrong
        (:meth:`~.durability.DurabilityCheck.check`)."""
        return self._durability.check()

    @contextmanager
    def _call(self) -> Iterator[None]:
        """One store call: fails closed on any Redis failure, and on unsafe settings when required."""
        self._durability.ensure()
        with store_call():
            yield

    # -- helpers ----------------------------------------------------------------------------------------

    def _stream_args(self, now: int) -> list[str | int]:
        """The stream's oldest id to keep and its expiry, for a publish at ``now``."""
        return [f"{max(now - self._event_retention, 0) * 1000}-0", now + self._event_retention]

    def _mark_and_publish(self, marker_key: str, until: int, event: RevocationEvent) -> RevocationEvent:
        """Set a marker, then publish ``event``: one script on a single node, two calls on a cluster."""
        if self._cluster:
            self._scripts.mark(keys=[marker_key], args=[until])
            return self._publish_event(event, event.revoked_at)
        args = [until, *self._stream_args(event.revoked_at), *event_fields(event)]
        cursor = text(self._revocation_script(self._scripts.mark, [marker_key, self._events_key], args))
        return with_cursor(event, cursor)

    def _revocation_script(self, script: Script, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        """Run a revocation script (single node); with ``min_replicas_acked``, return its reply only once
        ``WAIT`` confirms that many replicas, else raise ``StoreUnavailable``.

        ``WAIT`` counts the replicas that hold every write of *its own connection*, so it goes in one
        pipeline with the script: pooled connections would otherwise let it wait for another's writes.
        """
        if not self._min_replicas:
            return result(script(keys=keys, args=args))
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
        args = [*self._stream_args(now), *event_fields(event)]
        cursor = text(result(self._scripts.publish_event(keys=[self._events_key], args=args)))
        return with_cursor(event, cursor)

    def _cluster_snapshot(
        self, chain_keys: Sequence[str], field: str, horizons: Sequence[HorizonKey]
    ) -> list[Any]:
        """The snapshot script's reply, from a cluster in one pipeline: the chain's node and the
        horizons' nodes at once."""
        records, chain_marker, token_marker = chain_keys
        pipeline = cast(RedisCluster, self._client).pipeline()  # type: ignore[no-untyped-call]
        pipeline.hmget(records, [field, *ROOT_FIELDS])
        pipeline.exists(token_marker)
        pipeline.exists(chain_marker)
        for key in horizons:
            pipeline.get(self._horizon_key(key))
        fields, *rest = pipeline.execute()
        return [*fields, *rest]

    def _mget(self, keys: Sequence[str]) -> list[Any]:
        if self._cluster:
            cluster = cast(RedisCluster, self._client)
            return list(result(cluster.mget_nonatomic(keys)))
        return list(result(self._client.mget(keys)))


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


__all__ = ["CHAIN_VIEW_MAX", "SMALL_CHAIN_FIELDS", "RedisRegistry"]
