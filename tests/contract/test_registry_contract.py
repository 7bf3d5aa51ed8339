"""The one contract every TokenRegistry keeps (SPEC §5), run against the memory and the Redis store.

The registry is split into ports by use (``domain/ports.py``); the sections below follow the split:
DelegationStore (recording, checking, minting), RevocationStore (revoking, horizons, records, operator
chain revocation), ChainViews, RevocationLog (events) and StoreHealth.

The memory store runs on a fake clock; the Redis store on the session's own ``redis-server`` and real
time, so every test states absolute expiry times relative to the store's ``now`` and never depends on a
boundary second.

After the contract come the promises only one implementation makes: for Redis, TTLs on every key,
constant-cost revocation and checks, one slot per chain, failing closed; for memory, purging.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

import pytest
import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.retry import Retry

from delegation_service.adapters.memory_registry import MemoryRegistry
from delegation_service.adapters.redis import SMALL_CHAIN_FIELDS, RedisRegistry
from delegation_service.domain.errors import CursorExpired, InvalidRequest, StoreUnavailable
from delegation_service.domain.ports import (
    ChainRevocation,
    ChainViews,
    DelegationStore,
    RevocationLog,
    RevocationStore,
    StoreHealth,
    TokenRegistry,
)
from delegation_service.domain.revocation import (
    HorizonKey,
    HorizonKind,
    TokenRecord,
    TokenState,
    evaluate,
    root_is_active,
)
from delegation_service.domain.tokens import TokenKind

HOUR = 3600
CHAIN_LIMIT = 1000
HORIZON_RETENTION = 2 * 24 * HOUR
WAIT_LIMIT_SECONDS = 5.0


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: int = 1_800_000_000) -> None:
        self.current = start

    def now(self) -> int:
        return self.current

    def pass_beyond(self, moment: int) -> None:
        self.current = max(self.current, moment + 1)


class RealClock:
    """Wall-clock time; passing a moment means waiting for it (bounded)."""

    def now(self) -> int:
        return int(time.time())

    def pass_beyond(self, moment: int) -> None:
        # Redis expires a key once its millisecond clock is past EXAT * 1000.
        target = moment + 0.05
        assert target - time.time() < WAIT_LIMIT_SECONDS, "a test asked to wait too long"
        while time.time() < target:
            time.sleep(min(0.05, max(target - time.time(), 0.001)))


@dataclass
class StoreUnderTest:
    """A registry and the clock that drives its expiry."""

    store: TokenRegistry
    clock: FakeClock | RealClock

    def now(self) -> int:
        return self.clock.now()


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("cluster", marks=pytest.mark.redis),
    ]
)
def registry(request: pytest.FixtureRequest) -> Iterator[StoreUnderTest]:
    """Each contract test runs once per implementation: memory, a Redis node, a Redis Cluster."""
    if request.param == "memory":
        clock = FakeClock()
        yield StoreUnderTest(MemoryRegistry(clock, horizon_retention_seconds=HORIZON_RETENTION), clock)
        return
    # No leeway here, so expiry tests wait only a second; the leeway has its own Redis test.
    if request.param == "cluster":
        # The one-node cluster: a cluster client and the cluster code paths (horizons read before the
        # mint script, events published apart), with a node that refuses any CROSSSLOT step.
        cluster = RedisCluster.from_url(
            request.getfixturevalue("redis_cluster_server").url.removesuffix("/0")
        )
        cluster.flushall()
        yield StoreUnderTest(
            RedisRegistry(
                cluster,
                prefix="ct",
                leeway_seconds=0,
                horizon_retention_seconds=HORIZON_RETENTION,
                cluster=True,
            ),
            RealClock(),
        )
        cluster.close()
        return
    client: redis.Redis = request.getfixturevalue("redis_client")
    store = RedisRegistry(client, prefix="ct", leeway_seconds=0, horizon_retention_seconds=HORIZON_RETENTION)
    yield StoreUnderTest(store, RealClock())


SHORT_EVENT_RETENTION = 1


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def short_memory(request: pytest.FixtureRequest) -> Iterator[StoreUnderTest]:
    """Each implementation retaining events for :data:`SHORT_EVENT_RETENTION` seconds only."""
    if request.param == "memory":
        clock = FakeClock()
        yield StoreUnderTest(MemoryRegistry(clock, event_retention_seconds=SHORT_EVENT_RETENTION), clock)
        return
    client: redis.Redis = request.getfixturevalue("redis_client")
    prefix = f"ct-short-{new_chain_id()[:8]}"
    yield StoreUnderTest(
        RedisRegistry(client, prefix=prefix, leeway_seconds=0, event_retention_seconds=SHORT_EVENT_RETENTION),
        RealClock(),
    )


# -- builders ----------------------------------------------------------------------------------------


def new_chain_id() -> str:
    return uuid.uuid4().hex[:22]


def make_root(
    now: int,
    *,
    chain_id: str | None = None,
    subject: str = "alice",
    client_id: str = "gateway",
    issued_at: int | None = None,
    lifetime: int = HOUR,
) -> TokenRecord:
    issued = now - 60 if issued_at is None else issued_at
    return TokenRecord(
        token_id=f"root-{uuid.uuid4().hex[:8]}",
        chain_id=chain_id or new_chain_id(),
        kind=TokenKind.UPSTREAM,
        parent_token_id=None,
        subject=subject,
        client_id=client_id,
        root_client_id=client_id,
        scopes="directory.delegations.rw directory.person.rw",
        bearer="Per/42",
        issued_at=issued,
        root_issued_at=issued,
        expires_at=issued + lifetime,
    )


def make_child(
    root: TokenRecord,
    *,
    client_id: str = "billing",
    issued_at: int | None = None,
    expires_at: int | None = None,
) -> TokenRecord:
    issued = root.issued_at + 10 if issued_at is None else issued_at
    return TokenRecord(
        token_id=str(uuid.uuid4()),
        chain_id=root.chain_id,
        kind=TokenKind.DELEGATED,
        parent_token_id=root.token_id,
        subject=root.subject,
        client_id=client_id,
        root_client_id=root.client_id,
        scopes="directory.person.r",
        bearer=root.bearer,
        issued_at=issued,
        root_issued_at=root.issued_at,
        expires_at=root.expires_at if expires_at is None else expires_at,
    )


def state(registry: StoreUnderTest, record: TokenRecord) -> TokenState:
    """The state a check would give ``record``'s token right now."""
    return evaluate(record, registry.store.snapshot(record), registry.now())


def recorded_chain(registry: StoreUnderTest, children: int, **root_options: object) -> list[TokenRecord]:
    """A root and ``children`` children, all recorded; the root comes first."""
    root = make_root(registry.now(), **root_options)  # type: ignore[arg-type]
    kids = [make_child(root, client_id=f"client-{i % 7}") for i in range(children)]
    for kid in kids:
        assert registry.store.mint(root, kid).recorded
    return [root, *kids]


# -- the ports ---------------------------------------------------------------------------------------

PORTS = (DelegationStore, RevocationStore, RevocationLog, ChainViews, StoreHealth)


def methods_of(port: type) -> set[str]:
    return {name for name, value in vars(port).items() if callable(value) and not name.startswith("_")}


def test_the_ports_split_the_registry_into_uses_without_overlap() -> None:
    # Every operation of a store belongs to exactly one use: a use case given one port cannot reach
    # the operations of another.
    split = [methods_of(port) for port in PORTS]
    assert sum(len(methods) for methods in split) == len(set().union(*split))
    # ...and together they are the whole store: the memory store has nothing beyond them.
    assert set().union(*split) == methods_of(MemoryRegistry)


def test_every_store_implements_every_port(registry: StoreUnderTest) -> None:
    for port in PORTS:
        assert all(callable(getattr(registry.store, name, None)) for name in methods_of(port)), port


# -- DelegationStore: recording and checking ---------------------------------------------------------


def test_recorded_child_and_root_round_trip_through_snapshot(registry: StoreUnderTest) -> None:
    root = make_root(registry.now())
    child = make_child(root)

    outcome = registry.store.mint(root, child)

    assert outcome.recorded is True
    assert outcome.snapshot.record is None  # the root was not recorded before this, its first child
    assert evaluate(root, outcome.snapshot, registry.now()) is TokenState.ACTIVE

    for record in (root, child):
        snapshot = registry.store.snapshot(record)
        assert snapshot.record == record
        assert not snapshot.token_revoked
        assert not snapshot.chain_revoked
        assert dict(snapshot.horizons) == {}
        assert evaluate(record, snapshot, registry.now()) is TokenState.ACTIVE


def test_recording_a_second_child_keeps_the_first_root_record(registry: StoreUnderTest) -> None:
    root = make_root(registry.now())
    first, second = make_child(root), make_child(root, client_id="search")
    registry.store.mint(root, first)

    # A root presented again (same id) must not overwrite what was recorded first.
    outcome = registry.store.mint(replace(root, scopes="other.scope.r"), second)
    assert outcome.recorded
    assert outcome.snapshot.record == root

    assert registry.store.snapshot(root).record == root
    assert registry.store.snapshot(second).record == second


def test_unknown_delegated_token_is_unknown(registry: StoreUnderTest) -> None:
    root = make_root(registry.now())
    registry.store.mint(root, make_child(root))
    stranger = make_child(root)  # signed by us, perhaps, but never recorded

    snapshot = registry.store.snapshot(stranger)

    assert snapshot.record is None
    assert evaluate(stranger, snapshot, registry.now()) is TokenState.UNKNOWN


def test_unrecorded_upstream_root_is_judged_by_its_claims(registry: StoreUnderTest) -> None:
    root = make_root(registry.now())

    assert registry.store.snapshot(root).record is None
    assert state(registry, root) is TokenState.ACTIVE


# -- RevocationStore: revoking -----------------------------------------------------------------------


def test_revoking_a_chain_revokes_every_child_at_once(registry: StoreUnderTest) -> None:
    root, *children = recorded_chain(registry, 200)

    event = registry.store.revoke_chain(root.chain_id, root.expires_at, registry.now())

    assert (event.kind, event.chain_id, event.expires_at) == ("chain", root.chain_id, root.expires_at)
    assert state(registry, root) is TokenState.REVOKED
    assert all(state(registry, child) is TokenState.REVOKED for child in children)


def test_revoking_one_child_leaves_parent_and_siblings_active(registry: StoreUnderTest) -> None:
    root, target, *siblings = recorded_chain(registry, 4)

    event = registry.store.revoke_token(root.chain_id, target.token_id, target.expires_at, registry.now())

    assert (event.kind, event.chain_id, event.token_id) == ("token", root.chain_id, target.token_id)
    assert state(registry, target) is TokenState.REVOKED
    assert state(registry, root) is TokenState.ACTIVE
    assert all(state(registry, sibling) is TokenState.ACTIVE for sibling in siblings)


def test_revoking_is_idempotent(registry: StoreUnderTest) -> None:
    root, child, other = recorded_chain(registry, 2)
    now = registry.now()
    subject = HorizonKey(HorizonKind.SUBJECT, "idempotent-subject")

    for _ in range(2):
        registry.store.revoke_token(root.chain_id, child.token_id, child.expires_at, now)
        registry.store.revoke_horizon(subject, now, now)
    assert state(registry, child) is TokenState.REVOKED
    assert state(registry, other) is TokenState.ACTIVE
    assert registry.store.snapshot(replace(root, subject=subject.value)).horizons == {subject: now}

    for _ in range(2):
        registry.store.revoke_chain(root.chain_id, root.expires_at, now)
    assert {state(registry, record) for record in (root, child, other)} == {TokenState.REVOKED}


def test_mint_on_a_revoked_chain_records_nothing_and_shows_why(registry: StoreUnderTest) -> None:
    root = make_root(registry.now())
    registry.store.revoke_chain(root.chain_id, root.expires_at, registry.now())
    child = make_child(root)

    outcome = registry.store.mint(root, child)

    assert outcome.recorded is False
    assert outcome.snapshot.chain_revoked
    assert evaluate(root, outcome.snapshot, registry.now()) is TokenState.REVOKED
    assert registry.store.snapshot(child).record is None
    assert registry.store.snapshot(root).record is None
    chain = registry.store.chain(root.chain_id, CHAIN_LIMIT)
    assert chain is not None
    assert chain.records == ()
    assert chain.chain_revoked


def test_a_revocation_with_a_shorter_expiry_never_shortens_the_first(registry: StoreUnderTest) -> None:
    root, child = recorded_chain(registry, 1)
    now = registry.now()
    registry.store.revoke_chain(root.chain_id, now + 3, now)
    registry.store.revoke_chain(root.chain_id, now + 1, now)

    registry.clock.pass_beyond(now + 1)

    assert state(registry, child) is TokenState.REVOKED


# -- RevocationStore: horizons -----------------------------------------------------------------------


def test_subject_horizon_revokes_chains_rooted_at_or_before_it(registry: StoreUnderTest) -> None:
    now = registry.now()
    horizon = now - 100
    subject = f"subject-{uuid.uuid4().hex[:6]}"
    before = recorded_chain(registry, 1, subject=subject, issued_at=horizon - 10)
    at = recorded_chain(registry, 1, subject=subject, issued_at=horizon)
    after = recorded_chain(registry, 1, subject=subject, issued_at=horizon + 1)
    stranger = recorded_chain(registry, 1, subject="someone-else", issued_at=horizon - 10)

    event = registry.store.revoke_horizon(HorizonKey(HorizonKind.SUBJECT, subject), horizon, now)

    assert (event.kind, event.subject, event.revoked_at) == ("subject", subject, horizon)
    for record in before + at:
        assert state(registry, record) is TokenState.REVOKED, record
    for record in after + stranger:
        assert state(registry, record) is TokenState.ACTIVE, record


def test_client_horizon_revokes_tokens_held_or_delegated_at_or_before_it(registry: StoreUnderTest) -> None:
    now = registry.now()
    horizon = now - 100
    root = make_root(now, client_id="gateway-x", issued_at=horizon + 5)
    held_before = make_child(root, client_id="billing-x", issued_at=horizon - 1)
    held_at = make_child(root, client_id="billing-x", issued_at=horizon)
    held_after = make_child(root, client_id="billing-x", issued_at=horizon + 1)
    for child in (held_before, held_at, held_after):
        registry.store.mint(root, child)
    other_root = make_root(now, client_id="gateway-y", issued_at=horizon - 50)
    delegated_early = make_child(other_root, client_id="search", issued_at=horizon + 30)
    registry.store.mint(other_root, delegated_early)

    event = registry.store.revoke_horizon(HorizonKey(HorizonKind.CLIENT, "billing-x"), horizon, now)
    registry.store.revoke_horizon(HorizonKey(HorizonKind.CLIENT, "gateway-y"), horizon, now)

    assert (event.kind, event.client_id, event.revoked_at) == ("client", "billing-x", horizon)
    assert state(registry, held_before) is TokenState.REVOKED
    assert state(registry, held_at) is TokenState.REVOKED
    assert state(registry, held_after) is TokenState.ACTIVE
    assert state(registry, root) is TokenState.ACTIVE
    # The root client's horizon covers what it delegated from a root issued before the horizon.
    assert state(registry, delegated_early) is TokenState.REVOKED


def test_horizon_never_moves_back(registry: StoreUnderTest) -> None:
    now = registry.now()
    key = HorizonKey(HorizonKind.SUBJECT, f"subject-{uuid.uuid4().hex[:6]}")
    root, child = recorded_chain(registry, 1, subject=key.value, issued_at=now - 30)
    registry.store.revoke_horizon(key, now - 10, now)

    event = registry.store.revoke_horizon(key, now - 50, now)

    assert event.revoked_at == now - 10  # the horizon in force, not the older one asked for
    assert registry.store.snapshot(child).horizons[key] == now - 10
    assert state(registry, root) is TokenState.REVOKED
    assert state(registry, child) is TokenState.REVOKED


# -- ChainViews: chains ------------------------------------------------------------------------------


def test_chain_lists_root_and_children_with_their_states(registry: StoreUnderTest) -> None:
    root, revoked, *active = recorded_chain(registry, 3)
    registry.store.revoke_token(root.chain_id, revoked.token_id, revoked.expires_at, registry.now())

    chain = registry.store.chain(root.chain_id, CHAIN_LIMIT)

    assert chain is not None
    assert chain.chain_id == root.chain_id
    assert not chain.chain_revoked
    assert chain.revoked_token_ids == {revoked.token_id}
    states = chain.states(registry.now())
    assert states[0] == (root, TokenState.ACTIVE)
    assert {record.token_id: s for record, s in states[1:]} == {
        revoked.token_id: TokenState.REVOKED,
        **{record.token_id: TokenState.ACTIVE for record in active},
    }
    assert {record for record, _ in states} == {root, revoked, *active}


def test_chain_reports_a_revoked_chain_and_the_horizons_that_touch_it(registry: StoreUnderTest) -> None:
    now = registry.now()
    root, child = recorded_chain(registry, 1)
    registry.store.revoke_horizon(HorizonKey(HorizonKind.CLIENT, child.client_id), now - 1, now)
    registry.store.revoke_chain(root.chain_id, root.expires_at, now)

    chain = registry.store.chain(root.chain_id, CHAIN_LIMIT)

    assert chain is not None
    assert chain.chain_revoked
    assert chain.horizons == {HorizonKey(HorizonKind.CLIENT, child.client_id): now - 1}
    assert [s for _, s in chain.states(registry.now())] == [TokenState.REVOKED, TokenState.REVOKED]


def test_chain_of_an_unknown_id_is_none(registry: StoreUnderTest) -> None:
    assert registry.store.chain(new_chain_id(), CHAIN_LIMIT) is None


def test_chain_view_is_capped_to_the_root_and_the_children_that_expire_last(
    registry: StoreUnderTest,
) -> None:
    now = registry.now()
    root = make_root(now)
    children = [make_child(root, expires_at=now + 100 + i) for i in range(6)]
    for child in children:
        registry.store.mint(root, child)

    chain = registry.store.chain(root.chain_id, 4)

    assert chain is not None
    assert {record.token_id for record in chain.records} == {
        root.token_id,
        *(child.token_id for child in children[-3:]),
    }


# -- DelegationStore: minting ------------------------------------------------------------------------


def test_mint_reads_the_same_snapshot_a_check_of_the_root_reads(registry: StoreUnderTest) -> None:
    root, _ = recorded_chain(registry, 1)
    now = registry.now()
    registry.store.revoke_horizon(HorizonKey(HorizonKind.CLIENT, root.client_id), root.issued_at - 5, now)

    outcome = registry.store.mint(root, make_child(root))

    assert outcome.recorded
    assert outcome.snapshot == registry.store.snapshot(root)
    assert outcome.snapshot.horizons == {HorizonKey(HorizonKind.CLIENT, root.client_id): root.issued_at - 5}


def revoke_root_token(registry: StoreUnderTest, root: TokenRecord) -> None:
    registry.store.revoke_token(root.chain_id, root.token_id, root.expires_at, registry.now())


def subject_horizon_at_root(registry: StoreUnderTest, root: TokenRecord) -> None:
    key = HorizonKey(HorizonKind.SUBJECT, root.subject)
    registry.store.revoke_horizon(key, root.issued_at, registry.now())


def client_horizon_at_root(registry: StoreUnderTest, root: TokenRecord) -> None:
    key = HorizonKey(HorizonKind.CLIENT, root.client_id)
    registry.store.revoke_horizon(key, root.issued_at, registry.now())


@pytest.mark.parametrize(
    "revoke", [revoke_root_token, subject_horizon_at_root, client_horizon_at_root], ids=lambda f: f.__name__
)
def test_mint_records_nothing_for_a_root_revoked_by_its_marker_or_a_horizon(
    registry: StoreUnderTest, revoke: Callable[[StoreUnderTest, TokenRecord], None]
) -> None:
    root = make_root(
        registry.now(), subject=f"s-{uuid.uuid4().hex[:6]}", client_id=f"g-{uuid.uuid4().hex[:6]}"
    )
    first = make_child(root)
    assert registry.store.mint(root, first).recorded
    revoke(registry, root)
    late = make_child(root)

    outcome = registry.store.mint(root, late)

    assert outcome.recorded is False
    assert evaluate(root, outcome.snapshot, registry.now()) is TokenState.REVOKED
    assert registry.store.snapshot(late).record is None


RootSetUp = Callable[[TokenRegistry, TokenRecord, int], TokenRecord]
"""Puts the store in some state for ``root`` and returns the root then presented to mint."""


def _as_it_is(store: TokenRegistry, root: TokenRecord, now: int) -> TokenRecord:
    return root


def _root_token_revoked(store: TokenRegistry, root: TokenRecord, now: int) -> TokenRecord:
    store.revoke_token(root.chain_id, root.token_id, root.expires_at, now)
    return root


def _chain_revoked(store: TokenRegistry, root: TokenRecord, now: int) -> TokenRecord:
    store.revoke_chain(root.chain_id, root.expires_at, now)
    return root


def _subject_horizon_at_issue(store: TokenRegistry, root: TokenRecord, now: int) -> TokenRecord:
    store.revoke_horizon(HorizonKey(HorizonKind.SUBJECT, root.subject), root.issued_at, now)
    return root


def _subject_horizon_before_issue(store: TokenRegistry, root: TokenRecord, now: int) -> TokenRecord:
    store.revoke_horizon(HorizonKey(HorizonKind.SUBJECT, root.subject), root.issued_at - 1, now)
    return root


def _client_horizon_at_issue(store: TokenRegistry, root: TokenRecord, now: int) -> TokenRecord:
    store.revoke_horizon(HorizonKey(HorizonKind.CLIENT, root.client_id), root.issued_at, now)
    return root


def _expired(store: TokenRegistry, root: TokenRecord, now: int) -> TokenRecord:
    return replace(root, issued_at=now - 2 * HOUR, root_issued_at=now - 2 * HOUR, expires_at=now - HOUR)


def _stored_with_other_scopes(store: TokenRegistry, root: TokenRecord, now: int) -> TokenRecord:
    assert store.mint(root, make_child(root)).recorded
    return replace(root, scopes="directory.delegations.rw")


def _stored_as_another_token(store: TokenRegistry, root: TokenRecord, now: int) -> TokenRecord:
    assert store.mint(root, make_child(root)).recorded
    return replace(root, expires_at=root.expires_at - 1)


ROOT_SITUATIONS: list[tuple[RootSetUp, bool]] = [
    (_as_it_is, True),
    (_root_token_revoked, False),
    (_chain_revoked, False),
    (_subject_horizon_at_issue, False),
    (_subject_horizon_before_issue, True),
    (_client_horizon_at_issue, False),
    (_expired, False),
    (_stored_with_other_scopes, True),
    (_stored_as_another_token, False),
]


def assert_store_and_rule_agree(store: TokenRegistry, now: int, set_up: RootSetUp, active: bool) -> None:
    root = make_root(now, subject=f"s-{uuid.uuid4().hex[:6]}", client_id=f"g-{uuid.uuid4().hex[:6]}")
    presented = set_up(store, root, now)

    outcome = store.mint(presented, make_child(presented))

    assert root_is_active(presented, outcome.snapshot, now) is active
    assert outcome.recorded is active


@pytest.mark.parametrize(("set_up", "active"), ROOT_SITUATIONS, ids=lambda v: getattr(v, "__name__", ""))
def test_the_store_records_exactly_when_the_domain_rule_finds_the_root_active(
    registry: StoreUnderTest, set_up: RootSetUp, active: bool
) -> None:
    # "The root is active" has one home, root_is_active; a store that judges it again at its edge
    # (Redis's mint.lua, for atomicity) must come to the same verdict on every kind of root.
    assert_store_and_rule_agree(registry.store, registry.now(), set_up, active)


def test_mint_records_nothing_when_the_stored_root_is_another_token(registry: StoreUnderTest) -> None:
    root, _ = recorded_chain(registry, 1)
    impostor = replace(root, subject="mallory", bearer="Per/mallory")
    late = make_child(impostor)

    outcome = registry.store.mint(impostor, late)

    assert outcome.recorded is False
    assert outcome.snapshot.record == root
    assert evaluate(impostor, outcome.snapshot, registry.now()) is TokenState.UNKNOWN
    assert registry.store.record(root.chain_id, late.token_id) is None


def test_a_child_that_does_not_belong_to_the_root_is_refused(registry: StoreUnderTest) -> None:
    root = make_root(registry.now())
    child = make_child(root)

    for wrong in (
        make_child(root, expires_at=root.expires_at + 1),
        replace(child, subject="mallory"),
        replace(child, chain_id="another-chain"),
        replace(child, root_issued_at=root.issued_at - 1),
    ):
        with pytest.raises(ValueError, match="root"):
            registry.store.mint(root, wrong)
    assert registry.store.record(root.chain_id, child.token_id) is None


# -- RevocationStore: records ------------------------------------------------------------------------


def test_record_reads_one_token_of_a_chain(registry: StoreUnderTest) -> None:
    root, child = recorded_chain(registry, 1)

    assert registry.store.record(root.chain_id, root.token_id) == root
    assert registry.store.record(root.chain_id, child.token_id) == child
    assert registry.store.record(root.chain_id, "no-such-token") is None
    assert registry.store.record(new_chain_id(), child.token_id) is None


# -- RevocationStore: operator chain revocation ------------------------------------------------------


def test_revoking_a_known_chain_marks_it_and_reports_its_unexpired_tokens_and_clients(
    registry: StoreUnderTest,
) -> None:
    root, revoked, *others = recorded_chain(registry, 4)
    now = registry.now()
    registry.store.revoke_token(root.chain_id, revoked.token_id, revoked.expires_at, now)

    dry = registry.store.revoke_known_chain(root.chain_id, now, dry_run=True)
    assert dry == ChainRevocation(
        already_revoked=False,
        unexpired_token_count=5,  # the root and its four children, the one revoked before included
        client_ids=("client-0", "client-1", "client-2", "client-3", "gateway"),
        event=None,
    )
    assert all(state(registry, record) is TokenState.ACTIVE for record in (root, *others))
    assert [e.kind for e in registry.store.events(None, 10)] == ["token"]

    done = registry.store.revoke_known_chain(root.chain_id, now)

    assert done is not None and done.event is not None
    assert (done.already_revoked, done.unexpired_token_count, done.client_ids) == (
        False,
        5,
        dry.client_ids,
    )
    assert (done.event.kind, done.event.chain_id, done.event.revoked_at, done.event.expires_at) == (
        "chain",
        root.chain_id,
        now,
        root.expires_at,
    )
    assert list(registry.store.events(None, 10))[-1] == done.event
    assert {state(registry, record) for record in (root, revoked, *others)} == {TokenState.REVOKED}

    again = registry.store.revoke_known_chain(root.chain_id, now)
    assert again is not None and again.already_revoked


def test_revoking_an_unknown_chain_writes_nothing(registry: StoreUnderTest) -> None:
    chain_id = new_chain_id()

    assert registry.store.revoke_known_chain(chain_id, registry.now()) is None
    assert registry.store.revoke_known_chain(chain_id, registry.now(), dry_run=True) is None
    assert registry.store.chain(chain_id, CHAIN_LIMIT) is None
    assert list(registry.store.events(None, 10)) == []


def test_a_chain_known_by_its_marker_alone_can_be_revoked_again(registry: StoreUnderTest) -> None:
    chain_id = new_chain_id()
    now = registry.now()
    registry.store.revoke_chain(chain_id, now + 60, now)

    outcome = registry.store.revoke_known_chain(chain_id, now)

    assert outcome is not None
    assert (outcome.already_revoked, outcome.unexpired_token_count, outcome.client_ids) == (True, 0, ())
    assert outcome.event is not None and outcome.event.expires_at >= now + HORIZON_RETENTION


# -- RevocationLog: events ---------------------------------------------------------------------------


def test_events_come_back_in_order_and_resume_after_any_cursor(registry: StoreUnderTest) -> None:
    now = registry.now()
    root, child = recorded_chain(registry, 1)
    published = [
        registry.store.revoke_token(root.chain_id, child.token_id, child.expires_at, now),
        registry.store.revoke_horizon(HorizonKey(HorizonKind.SUBJECT, "s-events"), now, now),
        registry.store.revoke_horizon(HorizonKey(HorizonKind.CLIENT, "c-events"), now, now),
        registry.store.revoke_chain(root.chain_id, root.expires_at, now),
        registry.store.revoke_token(root.chain_id, root.token_id, root.expires_at, now),
    ]

    assert list(registry.store.events(None, 100)) == published
    assert [e.kind for e in published] == ["token", "subject", "client", "chain", "token"]
    assert len({e.cursor for e in published}) == len(published)

    # Following two at a time from the start misses nothing and repeats nothing.
    followed: list[object] = []
    cursor: str | None = None
    for _ in range(len(published) + 2):
        page = registry.store.events(cursor, 2)
        if not page:
            break
        followed += page
        cursor = page[-1].cursor
    assert followed == published

    for i, event in enumerate(published):
        assert list(registry.store.events(event.cursor, 100)) == published[i + 1 :]


def test_events_after_the_latest_cursor_are_empty_until_a_new_revocation(registry: StoreUnderTest) -> None:
    now = registry.now()
    first = registry.store.revoke_chain(new_chain_id(), now + HOUR, now)

    assert list(registry.store.events(first.cursor, 10)) == []
    second = registry.store.revoke_chain(new_chain_id(), now + HOUR, now)
    assert list(registry.store.events(first.cursor, 10)) == [second]


@pytest.mark.parametrize("cursor", ["not-a-cursor", "12-x", "-1", "1 2"])
def test_events_refuse_a_malformed_cursor(registry: StoreUnderTest, cursor: str) -> None:
    with pytest.raises(InvalidRequest):
        registry.store.events(cursor, 10)


STREAM_NODE_ENTRIES = 100  # Redis trims a stream by whole nodes of this many entries (MINID ~)


def test_a_cursor_whose_event_is_no_longer_retained_is_expired_not_silently_resumed(
    short_memory: StoreUnderTest,
) -> None:
    store, now = short_memory.store, short_memory.now()
    old = [store.revoke_chain(new_chain_id(), now + HOUR, now) for _ in range(3 * STREAM_NODE_ENTRIES)]
    short_memory.clock.pass_beyond(now + SHORT_EVENT_RETENTION + 1)
    later = short_memory.now()
    latest = store.revoke_chain(new_chain_id(), later + HOUR, later)  # publishing trims what is too old

    with pytest.raises(CursorExpired):
        store.events(old[0].cursor, 10)
    assert list(store.events(latest.cursor, 10)) == []
    retained = store.events(None, 10_000)
    assert retained[-1] == latest
    assert list(store.events(retained[0].cursor, 10_000)) == retained[1:]


# -- every port: expiry ------------------------------------------------------------------------------


def test_a_record_with_a_past_expiry_is_never_active(registry: StoreUnderTest) -> None:
    now = registry.now()
    root = make_root(now, issued_at=now - 2 * HOUR, lifetime=HOUR)  # expired an hour ago
    child = make_child(root)

    outcome = registry.store.mint(root, child)

    assert outcome.recorded is False
    assert evaluate(root, outcome.snapshot, registry.now()) is TokenState.EXPIRED
    assert registry.store.snapshot(child).record is None
    assert state(registry, child) in {TokenState.UNKNOWN, TokenState.EXPIRED}
    assert state(registry, root) is TokenState.EXPIRED
    assert registry.store.chain(root.chain_id, CHAIN_LIMIT) is None


def test_records_and_markers_expire_with_their_tokens(registry: StoreUnderTest) -> None:
    now = registry.now()
    root = make_root(now, issued_at=now - 10, lifetime=12)  # expires in two seconds
    child = make_child(root)
    registry.store.mint(root, child)
    registry.store.revoke_token(root.chain_id, child.token_id, child.expires_at, now)
    assert registry.store.snapshot(child).token_revoked

    registry.clock.pass_beyond(root.expires_at)

    snapshot = registry.store.snapshot(child)
    assert snapshot.record is None
    assert not snapshot.token_revoked
    assert registry.store.chain(root.chain_id, CHAIN_LIMIT) is None


# -- StoreHealth -------------------------------------------------------------------------------------


def test_ping_answers_when_the_store_is_up(registry: StoreUnderTest) -> None:
    assert registry.store.ping() is True


# == Redis only ======================================================================================

LEEWAY = 30
EVENT_RETENTION = 24 * HOUR


@pytest.fixture
def redis_registry(redis_client: redis.Redis) -> RedisRegistry:
    """A Redis registry with a production-like leeway, for the Redis-only tests."""
    return RedisRegistry(
        redis_client,
        prefix="rs",
        leeway_seconds=LEEWAY,
        horizon_retention_seconds=HORIZON_RETENTION,
        event_retention_seconds=EVENT_RETENTION,
    )


def now() -> int:
    return int(time.time())


def redis_chain(redis_registry: RedisRegistry, children: int) -> list[TokenRecord]:
    root = make_root(now())
    kids = [make_child(root, client_id=f"client-{i % 5}") for i in range(children)]
    for kid in kids:
        assert redis_registry.mint(root, kid).recorded
    return [root, *kids]


def write_everything(redis_registry: RedisRegistry) -> None:
    """Every kind of key the registry writes (a chain large enough to be indexed)."""
    root, child, other, *_ = redis_chain(redis_registry, SMALL_CHAIN_FIELDS + 1)
    t = now()
    redis_registry.revoke_token(root.chain_id, child.token_id, child.expires_at, t)
    redis_registry.revoke_chain(root.chain_id, root.expires_at, t)
    redis_registry.revoke_horizon(HorizonKey(HorizonKind.SUBJECT, root.subject), t, t)
    redis_registry.revoke_horizon(HorizonKey(HorizonKind.CLIENT, other.client_id), t, t)
    assert redis_registry.chain(root.chain_id, CHAIN_LIMIT) is not None
    assert redis_registry.events(None, 10)


# -- bounded memory ----------------------------------------------------------------------------------


@pytest.mark.redis
def test_every_key_the_registry_writes_has_a_ttl(
    redis_registry: RedisRegistry, redis_client: redis.Redis
) -> None:
    write_everything(redis_registry)

    keys = list(redis_client.scan_iter(count=1000))
    assert len(keys) == 7  # the chain's records and index, 2 markers, 2 horizons, the stream
    no_ttl = [key for key in keys if redis_client.ttl(key) < 0]
    assert no_ttl == []


@pytest.mark.redis
def test_record_and_marker_ttls_include_the_leeway(
    redis_registry: RedisRegistry, redis_client: redis.Redis
) -> None:
    root, child, *_ = redis_chain(redis_registry, SMALL_CHAIN_FIELDS + 1)
    redis_registry.revoke_token(root.chain_id, child.token_id, child.expires_at, now())

    # The chain's records and index expire with its root; a token's marker with its token.
    for key, expires_at in (
        (f"rs:{{{root.chain_id}}}", root.expires_at),
        (f"rs:{{{root.chain_id}}}:e", root.expires_at),
        (f"rs:{{{root.chain_id}}}:rt:{child.token_id}", child.expires_at),
    ):
        assert abs(redis_client.ttl(key) - (expires_at + LEEWAY - now())) <= 2, key


@pytest.mark.redis
def test_a_later_revocation_with_an_earlier_expiry_never_shortens_the_marker(
    redis_registry: RedisRegistry, redis_client: redis.Redis
) -> None:
    chain_id = uuid.uuid4().hex
    redis_registry.revoke_chain(chain_id, now() + HOUR, now())
    redis_registry.revoke_chain(chain_id, now() + 60, now())

    assert redis_client.ttl(f"rs:{{{chain_id}}}:rc") > HOUR - 5


def wait_past(moment: int) -> None:
    deadline = time.monotonic() + 5
    while now() <= moment and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.redis
def test_records_of_expired_children_are_dropped_once_a_chain_is_indexed(
    redis_registry: RedisRegistry, redis_client: redis.Redis
) -> None:
    short = RedisRegistry(redis_client, prefix="rs", leeway_seconds=0)
    t = now()
    root = make_root(t, issued_at=t - 10, lifetime=HOUR)
    hash_key, index_key = f"rs:{{{root.chain_id}}}", f"rs:{{{root.chain_id}}}:e"
    brief = [make_child(root, client_id="brief", expires_at=t + 1) for _ in range(3)]
    for child in brief:
        assert short.mint(root, child).recorded
    wait_past(t + 1)

    # A small chain keeps its expired children (a few fields, gone with the root) until it outgrows
    # SMALL_CHAIN_FIELDS: then it gets its index, without them.
    kept = [make_child(root) for _ in range(SMALL_CHAIN_FIELDS)]
    for child in kept:
        assert short.mint(root, child).recorded
    assert redis_client.exists(index_key)
    live_ids = {b":r", *(child.token_id.encode() for child in kept)}
    assert set(redis_client.zrange(index_key, 0, -1)) == live_ids
    assert not {child.token_id.encode() for child in brief} & set(redis_client.hkeys(hash_key))
    outcome = short.revoke_known_chain(root.chain_id, now(), dry_run=True)
    assert outcome is not None
    assert (outcome.unexpired_token_count, outcome.client_ids) == (len(kept) + 1, ("billing", "gateway"))

    # An indexed chain drops a few expired records on every mint.
    t = now()
    later_brief = [make_child(root, client_id="brief", issued_at=t, expires_at=t + 1) for _ in range(3)]
    for child in later_brief:
        short.mint(root, child)
    wait_past(t + 1)
    short.mint(root, make_child(root))
    assert not {child.token_id.encode() for child in later_brief} & set(redis_client.zrange(index_key, 0, -1))
    assert not {child.token_id.encode() for child in later_brief} & set(redis_client.hkeys(hash_key))
    value = redis_client.hget(hash_key, ":c")
    assert isinstance(value, bytes) and b"brief" not in value


@pytest.mark.redis
def test_records_past_their_expiry_but_not_yet_dropped_are_not_listed(
    redis_registry: RedisRegistry, redis_client: redis.Redis
) -> None:
    short = RedisRegistry(redis_client, prefix="rs", leeway_seconds=0)
    t = now()
    root = make_root(t, issued_at=t - 10, lifetime=HOUR)
    brief, kept = make_child(root, expires_at=t + 1), make_child(root)
    short.mint(root, brief)
    short.mint(root, kept)
    wait_past(t + 1)

    chain = short.chain(root.chain_id, CHAIN_LIMIT)

    assert chain is not None
    assert {record.token_id for record in chain.records} == {root.token_id, kept.token_id}
    assert evaluate(brief, short.snapshot(brief), now()) in {TokenState.EXPIRED, TokenState.UNKNOWN}


def memory_of(client: redis.Redis, chain_ids: Sequence[str]) -> int:
    """MEMORY USAGE of every key of these chains (values, names and per-key overhead)."""
    return sum(
        client.memory_usage(key, samples=0) or 0
        for chain_id in chain_ids
        for key in client.scan_iter(match=f"rs:{{{chain_id}}}*", count=1000)
    )


@pytest.mark.redis
def test_a_tracked_token_costs_under_300_bytes_in_a_chain_of_a_root_and_one_child(
    redis_registry: RedisRegistry, redis_client: redis.Redis
) -> None:
    chains = [redis_chain(redis_registry, 1) for _ in range(20)]

    total = memory_of(redis_client, [root.chain_id for root, _ in chains])

    assert total / (2 * len(chains)) < 300


@pytest.mark.redis
def test_a_tracked_token_costs_under_300_bytes_in_a_large_chain(
    redis_registry: RedisRegistry, redis_client: redis.Redis
) -> None:
    root, *children = redis_chain(redis_registry, 2000)

    assert memory_of(redis_client, [root.chain_id]) / (len(children) + 1) < 300


# -- constant cost -----------------------------------------------------------------------------------


def command_calls(client: redis.Redis) -> Counter[str]:
    """Calls per command since the last CONFIG RESETSTAT, including those run inside scripts."""
    stats = client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()})


def writes_of(client: redis.Redis, action: Callable[[], object]) -> Counter[str]:
    """The write commands ``action`` made Redis run, by name."""
    write_commands = {name for name, info in client.command().items() if "write" in info["flags"]}
    client.config_resetstat()
    action()
    return Counter({n: c for n, c in command_calls(client).items() if n.split("|")[0] in write_commands})


@pytest.mark.redis
def test_revoking_a_chain_costs_the_same_writes_for_1_and_2000_children(
    redis_registry: RedisRegistry, redis_client: redis.Redis
) -> None:
    small, _ = redis_chain(redis_registry, 1)
    large, *_ = redis_chain(redis_registry, 2000)

    small_writes = writes_of(
        redis_client, lambda: redis_registry.revoke_chain(small.chain_id, small.expires_at, now())
    )
    large_writes = writes_of(
        redis_client, lambda: redis_registry.revoke_chain(large.chain_id, large.expires_at, now())
    )

    assert small_writes == large_writes
    assert 0 < sum(large_writes.values()) <= 6  # marker and its expiry, the event and the stream's expiry


@pytest.mark.redis
def test_an_operator_chain_revocation_costs_the_same_for_100_and_2000_children(
    redis_registry: RedisRegistry, redis_client: redis.Redis
) -> None:
    chains = {size: redis_chain(redis_registry, size)[0] for size in (1, 100, 2000)}

    def commands_of(action: Callable[[], object]) -> Counter[str]:
        redis_client.config_resetstat()
        action()
        return command_calls(redis_client) - Counter({"config|resetstat": 1, "info": 1})

    counts = {}
    for dry_run in (True, False):
        commands = {}
        for size, root in chains.items():

            def revoke(root: TokenRecord = root, size: int = size, dry_run: bool = dry_run) -> None:
                outcome = redis_registry.revoke_known_chain(root.chain_id, now(), dry_run=dry_run)
                assert outcome is not None and not outcome.already_revoked
                counts[(size, dry_run)] = outcome.unexpired_token_count

            commands[size] = commands_of(revoke)
            # One round trip: the marker, the counts and the event in one script.
            assert commands[size]["evalsha"] == 1
        # An indexed chain counts with ZCOUNT; a small one (at most SMALL_CHAIN_FIELDS fields) reads them.
        assert commands[100] == commands[2000]
        assert sum(commands[1].values()) <= sum(commands[2000].values()) + 1
    assert counts == {(size, dry_run): size + 1 for size in chains for dry_run in (True, False)}


@pytest.mark.redis
def test_checking_a_token_reads_the_same_whatever_the_chain_size(
    redis_registry: RedisRegistry, redis_client: redis.Redis
) -> None:
    _, small_child = redis_chain(redis_registry, 1)
    _, *large_children = redis_chain(redis_registry, 2000)

    def commands_of(action: Callable[[], object]) -> Counter[str]:
        redis_client.config_resetstat()
        action()
        return command_calls(redis_client) - Counter({"config|resetstat": 1, "info": 1})

    small = commands_of(lambda: redis_registry.snapshot(small_child))
    large = commands_of(lambda: redis_registry.snapshot(large_children[-1]))

    # One script: the token's and its root's fields, both markers, the three horizons.
    assert small == large == Counter({"evalsha": 1, "hmget": 1, "exists": 2, "get": 3})


class CountingConnection(redis.Connection):
    """A connection that counts what it sends: one count per request written, a pipeline is one too."""

    sent = 0

    def send_packed_command(self, command: object, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]  # unannotated in redis-py


@pytest.mark.redis
def test_mint_check_and_each_revocation_is_one_round_trip_on_a_single_node(
    redis_client: redis.Redis,
) -> None:
    counted = redis.Redis(
        connection_pool=redis.ConnectionPool(
            connection_class=CountingConnection, **redis_client.connection_pool.connection_kwargs
        )
    )
    store = RedisRegistry(counted, prefix="rs", leeway_seconds=LEEWAY)
    warm_root = make_root(now())
    calls: dict[str, Callable[[], object]] = {
        "mint": lambda: store.mint(warm_root, make_child(warm_root)),
        "snapshot": lambda: store.snapshot(warm_root),
        "revoke_token": lambda: store.revoke_token(warm_root.chain_id, "x", now() + 60, now()),
        "revoke_chain": lambda: store.revoke_chain(new_chain_id(), now() + 60, now()),
        "revoke_horizon": lambda: store.revoke_horizon(HorizonKey(HorizonKind.CLIENT, "c"), now(), now()),
        "revoke_known_chain": lambda: store.revoke_known_chain(warm_root.chain_id, now()),
        "record": lambda: store.record(warm_root.chain_id, warm_root.token_id),
    }
    try:
        for call in calls.values():
            call()  # loads the scripts (NOSCRIPT, then SCRIPT LOAD) once
        trips = {}
        for name, call in calls.items():
            before = CountingConnection.sent
            call()
            trips[name] = CountingConnection.sent - before
    finally:
        counted.close()

    assert trips == dict.fromkeys(calls, 1)


@pytest.mark.redis
def test_keys_of_one_chain_share_one_cluster_slot(
    redis_registry: RedisRegistry, redis_client: redis.Redis
) -> None:
    write_everything(redis_registry)

    slots_by_chain: dict[str, set[int]] = {}
    for raw in redis_client.scan_iter(match="rs:{*", count=1000):
        key = raw.decode()
        chain_id = key[key.index("{") + 1 : key.index("}")]
        slots_by_chain.setdefault(chain_id, set()).add(key_slot(raw))
    assert slots_by_chain
    assert all(len(slots) == 1 for slots in slots_by_chain.values())


# -- fail closed -------------------------------------------------------------------------------------


@pytest.fixture
def unreachable_registry(unused_loopback_port: int) -> Iterator[RedisRegistry]:
    """A registry whose Redis is a closed loopback port: nothing listens, so connecting is refused."""
    client = redis.Redis(
        host="127.0.0.1",
        port=unused_loopback_port,
        socket_timeout=0.2,
        socket_connect_timeout=0.2,
        retry=Retry(NoBackoff(), 0),
    )
    yield RedisRegistry(client)  # constructing it makes no round trip
    client.close()


@pytest.mark.redis
def test_every_call_fails_closed_with_store_unavailable_when_redis_is_unreachable(
    unreachable_registry: RedisRegistry,
) -> None:
    root = make_root(now())
    child = make_child(root)
    t = now()
    calls: list[Callable[[], object]] = [
        lambda: unreachable_registry.snapshot(child),
        lambda: unreachable_registry.mint(root, child),
        lambda: unreachable_registry.revoke_token(root.chain_id, child.token_id, child.expires_at, t),
        lambda: unreachable_registry.revoke_chain(root.chain_id, root.expires_at, t),
        lambda: unreachable_registry.revoke_horizon(HorizonKey(HorizonKind.CLIENT, "c"), t, t),
        lambda: unreachable_registry.revoke_known_chain(root.chain_id, t),
        lambda: unreachable_registry.record(root.chain_id, child.token_id),
        lambda: unreachable_registry.chain(root.chain_id, CHAIN_LIMIT),
        lambda: unreachable_registry.events(None, 10),
    ]
    for call in calls:
        with pytest.raises(StoreUnavailable) as caught:
            call()
        assert isinstance(caught.value.__cause__, redis.RedisError)
    assert unreachable_registry.ping() is False


@pytest.mark.redis
def test_a_redis_error_reply_never_escapes_raw(
    redis_registry: RedisRegistry, redis_client: redis.Redis
) -> None:
    root = make_root(now())
    redis_client.set(f"rs:{{{root.chain_id}}}:e", "not a sorted set")

    with pytest.raises(StoreUnavailable):
        redis_registry.mint(root, make_child(root))
    with pytest.raises(StoreUnavailable):
        redis_registry.chain(root.chain_id, CHAIN_LIMIT)
    with pytest.raises(StoreUnavailable):
        redis_registry.revoke_known_chain(root.chain_id, now())
    # The script stopped at the index, but the hash it had written first still expires.
    assert redis_client.ttl(f"rs:{{{root.chain_id}}}") > 0


@pytest.mark.redis
def test_an_unreadable_record_fails_closed(redis_registry: RedisRegistry, redis_client: redis.Redis) -> None:
    root, child = redis_chain(redis_registry, 1)
    redis_client.hset(f"rs:{{{root.chain_id}}}", child.token_id, "[99]")

    with pytest.raises(StoreUnavailable):
        redis_registry.snapshot(child)


# -- construction and input --------------------------------------------------------------------------


@pytest.mark.redis
def test_the_cluster_flag_must_match_the_client(redis_client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="cluster"):
        RedisRegistry(redis_client, cluster=True)


# -- Redis Cluster -----------------------------------------------------------------------------------


@pytest.fixture(params=["one-node", "three-masters"])
def cluster_registry(request: pytest.FixtureRequest) -> Iterator[RedisRegistry]:
    """A cluster-mode registry on the one-node cluster, then on the real 3-master one, emptied first.

    One node proves the layout (it refuses CROSSSLOT even for slots it owns all of); three prove it works
    when the slots live in different processes.
    """
    fixture = "redis_cluster_server" if request.param == "one-node" else "redis_cluster"
    client = RedisCluster.from_url(request.getfixturevalue(fixture).url.removesuffix("/0"))
    client.flushall()
    yield RedisRegistry(client, prefix="cl", leeway_seconds=LEEWAY, cluster=True)
    client.close()


@pytest.mark.redis
def test_every_operation_works_on_a_cluster_without_crossing_slots(cluster_registry: RedisRegistry) -> None:
    t = now()
    root = make_root(t)
    children = [make_child(root, client_id=f"client-{i}") for i in range(3)]
    for child in children:
        assert cluster_registry.mint(root, child).recorded

    snapshot = cluster_registry.snapshot(children[0])
    assert snapshot.record == children[0]
    assert evaluate(children[0], snapshot, now()) is TokenState.ACTIVE

    cluster_registry.revoke_token(root.chain_id, children[0].token_id, children[0].expires_at, t)
    cluster_registry.revoke_horizon(HorizonKey(HorizonKind.CLIENT, children[1].client_id), t, t)
    assert evaluate(children[0], cluster_registry.snapshot(children[0]), now()) is TokenState.REVOKED
    assert evaluate(children[1], cluster_registry.snapshot(children[1]), now()) is TokenState.REVOKED
    assert evaluate(children[2], cluster_registry.snapshot(children[2]), now()) is TokenState.ACTIVE

    cluster_registry.revoke_chain(root.chain_id, root.expires_at, t)
    chain = cluster_registry.chain(root.chain_id, CHAIN_LIMIT)
    assert chain is not None
    assert {s for _, s in chain.states(now())} == {TokenState.REVOKED}
    assert cluster_registry.mint(root, make_child(root)).recorded is False
    assert [e.kind for e in cluster_registry.events(None, 10)] == ["token", "client", "chain"]
    assert cluster_registry.ping() is True


@pytest.mark.redis
@pytest.mark.parametrize(("set_up", "active"), ROOT_SITUATIONS, ids=lambda v: getattr(v, "__name__", ""))
def test_a_cluster_records_exactly_when_the_domain_rule_finds_the_root_active(
    cluster_registry: RedisRegistry, set_up: RootSetUp, active: bool
) -> None:
    # On a cluster the horizons are read before the script and handed to it: the verdict is the same.
    assert_store_and_rule_agree(cluster_registry, now(), set_up, active)


@pytest.mark.redis
def test_an_indexed_chain_is_minted_counted_and_revoked_on_a_cluster(cluster_registry: RedisRegistry) -> None:
    root = make_root(now())
    children = [make_child(root, client_id=f"client-{i % 3}") for i in range(SMALL_CHAIN_FIELDS + 6)]
    for child in children:
        assert cluster_registry.mint(root, child).recorded
    assert cluster_registry.record(root.chain_id, children[-1].token_id) == children[-1]

    dry = cluster_registry.revoke_known_chain(root.chain_id, now(), dry_run=True)
    done = cluster_registry.revoke_known_chain(root.chain_id, now())

    assert dry is not None and done is not None and done.event is not None
    assert (dry.unexpired_token_count, dry.client_ids) == (
        len(children) + 1,
        ("client-0", "client-1", "client-2", "gateway"),
    )
    assert (done.already_revoked, done.unexpired_token_count) == (False, len(children) + 1)
    assert [e.cursor for e in cluster_registry.events(None, 10)] == [done.event.cursor]
    assert evaluate(children[0], cluster_registry.snapshot(children[0]), now()) is TokenState.REVOKED
    view = cluster_registry.chain(root.chain_id, 10)
    assert view is not None and view.chain_revoked and len(view.records) == 10


# == Memory only =====================================================================================


def memory_entries(store: MemoryRegistry) -> int:
    """Everything the memory store holds, expired or not."""
    return (
        sum(len(records) for records in store._chains.values())
        + len(store._chain_markers)
        + len(store._token_markers)
        + len(store._horizons)
        + len(store._events)
        + len(store._expiries)
    )


def test_memory_store_purges_expired_entries_on_writes() -> None:
    clock = FakeClock()
    store = MemoryRegistry(clock, horizon_retention_seconds=HOUR, event_retention_seconds=HOUR)
    for _ in range(50):
        root = make_root(clock.now(), issued_at=clock.now(), lifetime=600)
        child = make_child(root)
        store.mint(root, child)
        store.revoke_token(root.chain_id, child.token_id, child.expires_at, clock.now())
        store.revoke_chain(root.chain_id, root.expires_at, clock.now())
        store.revoke_horizon(HorizonKey(HorizonKind.CLIENT, uuid.uuid4().hex), clock.now(), clock.now())
    assert memory_entries(store) > 0

    clock.pass_beyond(clock.now() + 2 * HOUR)
    survivor = make_root(clock.now())
    store.mint(survivor, make_child(survivor))

    # Only the last write's two records and their two heap entries remain.
    assert memory_entries(store) == 4
