"""Revocation at scale and Redis hygiene, through the real server, on a single node and on the 3-master
cluster (SPEC §5).

- Revoking a chain of 1 child and of 10,000 children makes Redis run the same write commands, counted
  with ``INFO commandstats`` on every master; every child is inactive as soon as RevokeChain returns.
- Every key the service writes has a TTL, and once short-lived tokens expire the service's keys are gone.

The 10,000 children are recorded with the registry's own ``mint`` (the script Delegate runs),
not minted one RPC at a time, to keep the suite fast; a few are minted through Delegate as well, so
real tokens are checked through Introspect too.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import pytest
import redis
from redis.cluster import RedisCluster

from delegation_service.adapters.redis import SMALL_CHAIN_FIELDS, RedisRegistry
from delegation_service.domain.revocation import TokenRecord, TokenState, evaluate
from delegation_service.domain.tokens import TokenKind
from tests.integration.harness import SHORT_LIVED, SHORT_LIVED_PARENT_SECONDS, Harness, start_harness

pytestmark = pytest.mark.redis

LARGE_CHAIN = 10_000
MINTED_THROUGH_DELEGATE = 5
CHECK_THREADS = 8
EXPIRY_WAIT_SECONDS = 15.0


@dataclass
class Deployment:
    """The service on one Redis deployment, with direct access to every master."""

    mode: str
    harness: Harness
    masters: list[redis.Redis]
    registry: RedisRegistry
    """A second registry on the service's keys: records the bulk children and checks them."""
    prefix: str

    def keys(self) -> list[bytes]:
        """Every key of the service, on every master."""
        return [key for node in self.masters for key in node.scan_iter(match=f"{self.prefix}:*", count=1000)]

    def keys_without_ttl(self) -> list[bytes]:
        return [
            key
            for node in self.masters
            for key in node.scan_iter(match=f"{self.prefix}:*", count=1000)
            if node.ttl(key) == -1
        ]


def deploy(request: pytest.FixtureRequest, mode: str, **overrides: object) -> Iterator[Deployment]:
    prefix = f"sc{secrets.token_hex(4)}"
    if mode == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        url, masters = cluster.url, cluster.node_clients()
        client: redis.Redis | RedisCluster = cluster.client()
    else:
        server = request.getfixturevalue("redis_server")
        url, masters = server.url, [server.client()]
        client = server.client()
    harness = start_harness(url, redis_mode=mode, redis_key_prefix=prefix, **overrides)
    config = harness.app.config
    registry = RedisRegistry(
        client, prefix=prefix, leeway_seconds=config.leeway_seconds, cluster=mode == "cluster"
    )
    try:
        yield Deployment(mode, harness, masters, registry, prefix)
    finally:
        harness.server.stop(0)
        client.close()


@pytest.fixture(scope="module", params=["standalone", "cluster"])
def deployment(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    yield from deploy(request, request.param)


@pytest.fixture(params=["standalone", "cluster"])
def short_lived(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    yield from deploy(request, request.param, **SHORT_LIVED)


# -- constant writes --------------------------------------------------------------------------------


def write_commands(node: redis.Redis) -> set[str]:
    return {name for name, info in node.command().items() if "write" in info["flags"]}


def writes_during(masters: list[redis.Redis], action: Callable[[], object]) -> Counter[str]:
    """The write commands ``action`` made Redis run, summed over every master (scripts included)."""
    writes = write_commands(masters[0])
    for node in masters:
        node.config_resetstat()
    action()
    total: Counter[str] = Counter()
    for node in masters:
        for name, stats in node.info("commandstats").items():
            command = name.removeprefix("cmdstat_")
            if command.split("|")[0] in writes:
                total[command] += int(stats["calls"])
    return total


@dataclass
class Chain:
    chain_id: str
    tokens: list[str]
    """Children minted through Delegate (real JWTs)."""
    records: list[TokenRecord]
    """Every child's record."""


def build_chain(deployment: Deployment, children: int) -> Chain:
    """A chain of ``children`` children: a few minted through Delegate, the rest recorded in bulk."""
    harness = deployment.harness
    parent = harness.parent()
    with harness.client() as client:
        minted = [
            client.delegate(parent, "billing", ["warehouse.items.r"])
            for _ in range(min(children, MINTED_THROUGH_DELEGATE))
        ]
    chain_id = minted[0].chain_id
    snapshot = deployment.registry.chain(chain_id, 1000)
    assert snapshot is not None
    root = next(r for r in snapshot.records if r.kind is TokenKind.UPSTREAM)
    model = next(r for r in snapshot.records if r.kind is TokenKind.DELEGATED)
    bulk = [
        replace(model, token_id=f"bulk-{index:05d}", client_id=f"client-{index % 7}")
        for index in range(children - len(minted))
    ]
    for record in bulk:
        assert deployment.registry.mint(root, record).recorded
    recorded = [r for r in snapshot.records if r.kind is TokenKind.DELEGATED] + bulk
    assert len(recorded) == children
    return Chain(chain_id, [m.access_token for m in minted], recorded)


def states(deployment: Deployment, records: list[TokenRecord]) -> Counter[TokenState]:
    """The state of every record as Introspect decides it (the same snapshot and rule), in parallel."""
    registry = deployment.registry

    def state(record: TokenRecord) -> TokenState:
        return evaluate(record, registry.snapshot(record), int(time.time()))

    with ThreadPoolExecutor(CHECK_THREADS) as pool:
        return Counter(pool.map(state, records, chunksize=250))


def test_revoking_a_chain_of_10000_children_writes_what_revoking_1_child_does(
    deployment: Deployment,
) -> None:
    small = build_chain(deployment, 1)
    large = build_chain(deployment, LARGE_CHAIN)
    assert states(deployment, large.records) == Counter({TokenState.ACTIVE: LARGE_CHAIN})

    with deployment.harness.client(timeout=30.0) as client:
        timings: dict[str, float] = {}
        radius: dict[str, int] = {}

        def revoke(chain: Chain, label: str) -> Callable[[], object]:
            def call() -> object:
                start = time.perf_counter()
                response = client.revoke_chain(chain.chain_id, justification="scale test")
                timings[label] = time.perf_counter() - start
                radius[label] = response.revoked_token_count
                return response

            return call

        small_writes = writes_during(deployment.masters, revoke(small, "1"))
        large_writes = writes_during(deployment.masters, revoke(large, f"{LARGE_CHAIN}"))

        # Right after the call returned: every child is inactive, the real tokens too.
        assert states(deployment, large.records) == Counter({TokenState.REVOKED: LARGE_CHAIN})
        assert not any(client.introspect(token).active for token in [*small.tokens, *large.tokens])

    assert radius == {"1": 1 + 1, str(LARGE_CHAIN): LARGE_CHAIN + 1}  # the children and their root
    assert small_writes == large_writes
    assert 0 < sum(large_writes.values()) <= 6  # the marker and its expiry, the event and its expiry
    print(
        f"\n{deployment.mode}: RevokeChain writes for 1 child {dict(small_writes)}, for {LARGE_CHAIN} "
        f"{dict(large_writes)}; call took {timings['1'] * 1000:.1f} ms vs "
        f"{timings[str(LARGE_CHAIN)] * 1000:.1f} ms (the blast radius is a count, whatever the size)"
    )


# -- TTL hygiene ------------------------------------------------------------------------------------


def test_every_key_has_a_ttl_and_all_are_gone_once_the_tokens_expire(short_lived: Deployment) -> None:
    harness = short_lived.harness
    baseline = len(short_lived.keys())
    with harness.client() as client:
        parents = [
            harness.parent(subject=f"user-{index}", lifetime_seconds=SHORT_LIVED_PARENT_SECONDS)
            for index in range(4)
        ]
        children = [
            client.delegate(parent, client_id, ["warehouse.items.r"])
            for parent in parents
            for client_id in ("billing", "search")
        ]
        # Enough children on one chain for it to get its expiry index (a key of its own).
        for _ in range(SMALL_CHAIN_FIELDS):
            client.delegate(parents[3], "billing", ["warehouse.items.r"])
        client.revoke(children[0].access_token)  # a token marker
        client.revoke_chain(children[2].chain_id)  # a chain marker
        client.revoke_subject("user-2")  # a subject horizon
        client.revoke_client("search")  # a client horizon
        assert not client.introspect(children[0].access_token).active
        assert client.introspect(children[6].access_token).active
    written = len(short_lived.keys())
    assert written - baseline >= 10  # 4 chains' records and 1 index, 2 markers, 2 horizons, the stream

    waited_from = time.monotonic()
    remaining = written
    while remaining > baseline:
        assert short_lived.keys_without_ttl() == []
        assert time.monotonic() - waited_from < EXPIRY_WAIT_SECONDS, f"{remaining} keys left"
        time.sleep(0.25)
        remaining = len(short_lived.keys())
    print(
        f"\n{short_lived.mode}: {written} keys after minting and revoking (baseline {baseline}), "
        f"{remaining} {time.monotonic() - waited_from:.1f}s later"
    )
