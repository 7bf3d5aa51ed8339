"""The cost of scale: chains of 1 and N children, Redis memory per tracked token, round trips per call.

Chains are written straight into Redis with the registry's own ``mint`` (its real script, key layout
and encoding), pipelined in batches, rather than through gRPC: 100,000 children load in seconds.
Round trips are counted from ``MONITOR`` (commands sent by clients, not those run inside scripts) during
a short census, and from ``INFO commandstats`` deltas during the measured phases.
"""

from __future__ import annotations

import re
import socket
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import redis

from bench.common import (
    CHILD_CLIENT,
    CHILD_SCOPES,
    PARENT_CLIENT,
    PARENT_SCOPES,
    SERVICE_KEY_PREFIX,
    UPSTREAM_ISSUER,
)
from delegation_service.adapters.redis import RedisRegistry
from delegation_service.app import retention_seconds
from delegation_service.config import Config
from delegation_service.domain.revocation import TokenRecord
from delegation_service.domain.tokens import TokenKind, root_chain_id
from devtools.redis_server import LOOPBACK

PIPELINE_BATCH = 2000
MEMORY_SAMPLES = 200


class PipelinedScripts:
    """A stand-in client for :class:`RedisRegistry` that queues its script calls on a pipeline.

    The registry computes keys and encodes records exactly as in service; each mint is queued and
    answered at once as the mint script answers a first mint on a chain with nothing against it
    (recorded; no root stored before, no markers, no horizons: one per key after the chain's four);
    :meth:`flush` sends the batch and checks every real answer.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._pipeline = client.pipeline(transaction=False)
        self._queued = 0
        self.refused = 0

    def register_script(self, source: str) -> Callable[..., list[Any]]:
        script = self._client.register_script(source)

        def call(keys: Sequence[str] = (), args: Sequence[Any] = ()) -> list[Any]:
            script(keys=keys, args=args, client=self._pipeline)
            self._queued += 1
            if self._queued >= PIPELINE_BATCH:
                self.flush()
            return [1, None, None, None, None, 0, 0, *([None] * (len(keys) - 4))]

        return call

    def flush(self) -> None:
        if self._queued:
            self.refused += sum(1 for answer in self._pipeline.execute() if int(answer[0]) != 1)
            self._queued = 0


def service_registry(client: Any) -> RedisRegistry:
    """A registry over ``client`` with the prefix, leeway and retentions the bench service runs with."""
    defaults = Config()
    return RedisRegistry(
        client,
        prefix=SERVICE_KEY_PREFIX,
        leeway_seconds=defaults.leeway_seconds,
        horizon_retention_seconds=retention_seconds(defaults),
        event_retention_seconds=retention_seconds(defaults),
    )


def root_record(name: str, now: int) -> TokenRecord:
    """An upstream root's record (a chain of its own), as the service would keep it."""
    token_id = f"root-{name}"
    return TokenRecord(
        token_id=token_id,
        chain_id=root_chain_id(UPSTREAM_ISSUER, token_id),
        kind=TokenKind.UPSTREAM,
        parent_token_id=None,
        subject=f"chain-{name}",
        client_id=PARENT_CLIENT,
        root_client_id=PARENT_CLIENT,
        scopes=" ".join(PARENT_SCOPES),
        bearer=f"Per/chain-{name}",
        issued_at=now,
        root_issued_at=now,
        expires_at=now + 3600,
    )


def _child(root: TokenRecord, index: int, now: int) -> TokenRecord:
    return TokenRecord(
        token_id=f"c{index:07d}-{root.token_id[-6:]}xxxxxxxxxx",  # 22 characters, like a real jti
        chain_id=root.chain_id,
        kind=TokenKind.DELEGATED,
        parent_token_id=root.token_id,
        subject=root.subject,
        client_id=CHILD_CLIENT,
        root_client_id=root.client_id,
        scopes=" ".join(CHILD_SCOPES),
        bearer=root.bearer,
        issued_at=now,
        root_issued_at=root.issued_at,
        expires_at=now + 900,
    )


def load_chain(client: redis.Redis, name: str, children: int) -> tuple[TokenRecord, int]:
    """Write a chain of ``children`` children through the registry, pipelined; (root, refused)."""
    now = int(time.time())
    root = root_record(name, now)
    stand_in = PipelinedScripts(client)
    registry = service_registry(stand_in)
    for index in range(children):
        registry.mint(root, _child(root, index, now))
    stand_in.flush()
    return root, stand_in.refused


def used_memory(client: redis.Redis) -> int:
    """Redis's ``used_memory`` (bytes allocated for data and overhead)."""
    info: dict[str, Any] = client.info("memory")
    return int(info["used_memory"])


def memory_per_token(client: redis.Redis, big_chain: int, small_chains: int) -> dict[str, Any]:
    """Memory per tracked token: INFO deltas over a big chain and over many 1-child chains, and samples.

    Returns the big chain's root too (under ``"big_root"``) so that it can be revoked afterwards.
    """
    before = used_memory(client)
    big_root, refused_big = load_chain(client, "big", big_chain)
    after_big = used_memory(client)
    now = int(time.time())
    stand_in = PipelinedScripts(client)
    registry = service_registry(stand_in)
    small_roots = []
    for index in range(small_chains):
        root = root_record(f"small{index}", now)
        small_roots.append(root)
        registry.mint(root, _child(root, 0, now))
    stand_in.flush()
    after_small = used_memory(client)

    def usage(key: str) -> int:
        return int(client.memory_usage(key, samples=0) or 0)

    def chain_keys(root: TokenRecord) -> list[str]:
        # The chain's hash, and its index once it has outgrown a few dozen fields (no markers here).
        tag = f"{SERVICE_KEY_PREFIX}:{{{root.chain_id}}}"
        return [tag, f"{tag}:e"]

    big_records, big_index = chain_keys(big_root)
    sampled_roots = small_roots[:MEMORY_SAMPLES]
    return {
        "big_root": big_root,
        "small_roots": small_roots,
        "big_chain_children": big_chain,
        "small_chains": small_chains,
        "refused_writes": refused_big + stand_in.refused,
        "bytes_per_child_in_big_chain": (after_big - before) / big_chain if big_chain else 0.0,
        "bytes_per_token_in_1_child_chains": (after_small - after_big) / (2 * small_chains)
        if small_chains
        else 0.0,
        "bytes_per_1_child_chain": (after_small - after_big) / small_chains if small_chains else 0.0,
        "memory_usage_1_child_chain": statistics.mean(
            sum(usage(key) for key in chain_keys(root)) for root in sampled_roots
        )
        if sampled_roots
        else 0.0,
        "memory_usage_records_per_child_big_chain": usage(big_records) / big_chain if big_chain else 0.0,
        "memory_usage_index_per_child_big_chain": usage(big_index) / big_chain if big_chain else 0.0,
    }


# -- round trips --------------------------------------------------------------------------------------------

_MONITOR_LINE = re.compile(r'^\+\d+\.\d+ \[\d+ ([^\]]+)\] "([^"]+)"')
_BACKGROUND = frozenset({"PING", "INFO", "MONITOR", "CLIENT", "HELLO", "SELECT", "XRANGE"})
"""Commands that are not part of serving a call: health probes, connection set-up, our own, and the
revocation log reads of every bench server's shared feed (each polls 20 times a second whatever the
load; no RPC counted here reads the log)."""


class CommandCensus:
    """Counts the commands clients send to Redis (not those run inside scripts), via ``MONITOR``.

    A pipeline of N commands would count N here; the service sends none. Bounded: it reads until
    :meth:`stop` or ``limit_seconds``.
    """

    def __init__(self, port: int, limit_seconds: float = 120.0) -> None:
        self._socket = socket.create_connection((LOOPBACK, port), timeout=5)
        self._socket.sendall(b"MONITOR\r\n")
        self._socket.settimeout(0.2)
        self._stop = threading.Event()
        self._limit = time.monotonic() + limit_seconds
        self._buffer = b""
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._thread = threading.Thread(target=self._read, name="monitor", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._limit:
            try:
                chunk = self._socket.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            self._buffer += chunk
            *lines, self._buffer = self._buffer.split(b"\r\n")
            with self._lock:
                for line in lines:
                    match = _MONITOR_LINE.match(line.decode("utf-8", "replace"))
                    if match and match.group(1) != "lua" and match.group(2).upper() not in _BACKGROUND:
                        self._counts[match.group(2).upper()] += 1

    def take(self) -> Counter[str]:
        """The commands counted since the last call (after letting in-flight lines arrive)."""
        time.sleep(0.3)
        with self._lock:
            counts, self._counts = self._counts, Counter()
        return counts

    def stop(self) -> None:
        """Stop reading and close the connection."""
        self._stop.set()
        self._thread.join(timeout=2)
        self._socket.close()


def commandstats(client: redis.Redis) -> dict[str, int]:
    """``INFO commandstats`` as {command: calls} (script-internal commands included)."""
    stats: dict[str, Any] = client.info("commandstats")
    return {name.removeprefix("cmdstat_").upper(): int(value["calls"]) for name, value in stats.items()}


def per_call_delta(before: dict[str, int], after: dict[str, int], calls: int) -> dict[str, float]:
    """Each command's calls between two ``commandstats`` readings, per RPC (INFO itself left out)."""
    if calls <= 0:
        return {}
    delta = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    return {
        name: round(count / calls, 3) for name, count in sorted(delta.items()) if count > 0 and name != "INFO"
    }


def keys_without_ttl(client: redis.Redis, limit: int = 1_000_000) -> dict[str, Any]:
    """Keys that would outlive every token (no TTL) after the run, counted by shape (the key with its
    ids replaced): every key the service writes should expire with what it describes (SPEC §4)."""
    shapes: Counter[str] = Counter()
    scanned, cursor = 0, 0
    while scanned < limit:
        cursor, batch = client.scan(cursor, count=1000)
        pipe = client.pipeline(transaction=False)
        for key in batch:
            pipe.ttl(key)
        for key, ttl in zip(batch, pipe.execute(), strict=True):
            if ttl == -1:
                shapes[_shape(key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key))] += 1
        scanned += len(batch)
        if cursor == 0:
            break
    return {"scanned": scanned, "without_ttl": sum(shapes.values()), "by_shape": dict(shapes.most_common(20))}


def _shape(key: str) -> str:
    """``bench:{chain}:t:abc`` -> ``bench:{*}:t:*``: ids (hash tags, the last segment of long keys) hidden."""
    shaped = re.sub(r"\{[^}]*\}", "{*}", key)
    head, sep, last = shaped.rpartition(":")
    return f"{head}{sep}*" if sep and len(last) > 8 else shaped
