"""Redis down, killed, frozen and restarted under a running service (SPEC §5: fail closed, never lose an
acknowledged revocation).

Every test runs its own ``redis-server`` (never the suite's shared one) with the settings production
needs (AOF with ``appendfsync always``, ``noeviction``), and its own service with the persistence check
on. Every call carries a deadline; every load loop is bounded in calls and in time.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from delegation.v1 import delegation_pb2
from delegation_service.adapters.redis import UnsafePersistence
from delegation_service.client import DelegationClient
from tests.integration.harness import Harness, start_harness
from tests.redis_processes import DURABLE, PrivateRedis, start_redis_cluster

pytestmark = pytest.mark.redis

DEADLINE_SECONDS = 2.0
"""The deadline every call of these tests carries."""
ANSWER_SLACK_SECONDS = 0.5
"""How late after its deadline a call may come back (scheduling on a loaded test host)."""
HEALTH_WAIT_SECONDS = 10.0
LOAD_THREADS = 4
LOAD_CALLS_PER_THREAD = 400
LOAD_SECONDS_LIMIT = 20.0
FAILING = ("UNAVAILABLE", "DEADLINE_EXCEEDED")


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A private, durable ``redis-server`` (not started: each test decides when)."""
    server = PrivateRedis(tmp_path / "redis", dict(DURABLE))
    yield server
    server.stop()


@contextmanager
def running_service(redis_url: str, **overrides: object) -> Iterator[Harness]:
    """The service on ``redis_url`` with the production persistence check (no override)."""
    harness = start_harness(redis_url, **{"redis_allow_unsafe_persistence": False, **overrides})
    try:
        yield harness
    finally:
        harness.server.stop(0)


def health(harness: Harness) -> str:
    with grpc.insecure_channel(harness.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        # types-grpcio-health-checking declares HealthStub without its methods.
        response = stub.Check(health_pb2.HealthCheckRequest(), timeout=DEADLINE_SECONDS)  # type: ignore[attr-defined]
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def wait_for_health(harness: Harness, status: str) -> float:
    """Seconds until the server reports ``status`` (bounded)."""
    start = time.monotonic()
    while (seen := health(harness)) != status:
        assert time.monotonic() - start < HEALTH_WAIT_SECONDS, f"health stayed {seen}, wanted {status}"
        time.sleep(0.05)
    return time.monotonic() - start


@dataclass(frozen=True)
class Outcome:
    """One call: when it started, how long it took, and what it answered."""

    name: str
    started: float
    seconds: float
    answer: str  # ACTIVE / INACTIVE for Introspect, OK for the others, or the status code's name


def timed(name: str, call: Callable[[], object]) -> Outcome:
    start = time.monotonic()
    try:
        response = call()
    except grpc.RpcError as error:
        answer = error.code().name if isinstance(error, grpc.Call) else "UNKNOWN"
    else:
        active = getattr(response, "active", None)
        answer = "OK" if active is None else ("ACTIVE" if active else "INACTIVE")
    return Outcome(name, start, time.monotonic() - start, answer)


def every_kind_of_call(client: DelegationClient, parent: str, child: str, chain_id: str) -> list[Outcome]:
    """One call of each RPC that needs the store, all at once."""
    calls: list[tuple[str, Callable[[], object]]] = [
        ("Delegate", lambda: client.delegate(parent, "billing", ["warehouse.items.r"])),
        ("Introspect child", lambda: client.introspect(child)),
        ("Introspect parent", lambda: client.introspect(parent)),
        ("Revoke", lambda: client.revoke(child)),
        ("RevokeChain", lambda: client.revoke_chain(chain_id, dry_run=True)),
        ("RevokeSubject", lambda: client.revoke_subject("nobody-in-particular")),
        ("GetChain", lambda: client.get_chain(chain_id)),
        ("WatchRevocations", lambda: first_revocation(client)),
    ]
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda call: timed(*call), calls))


def first_revocation(client: DelegationClient) -> object:
    stream = client.public.WatchRevocations(
        delegation_pb2.WatchRevocationsRequest(), timeout=DEADLINE_SECONDS
    )
    try:
        return next(iter(stream))
    finally:
        stream.cancel()


def assert_failed_closed_in_time(outcomes: list[Outcome]) -> None:
    wrong = [o for o in outcomes if o.answer not in FAILING]
    assert wrong == [], f"answered while Redis was unusable: {wrong}"
    late = [o for o in outcomes if o.seconds > DEADLINE_SECONDS + ANSWER_SLACK_SECONDS]
    assert late == [], f"answered after the deadline: {late}"


def seed(harness: Harness, client: DelegationClient) -> tuple[str, str, str]:
    """A parent, a child of it and their chain, recorded while Redis is up."""
    parent = harness.parent()
    minted = client.delegate(parent, "billing", ["warehouse.items.r"])
    return parent, minted.access_token, minted.chain_id


class Load:
    """Bounded concurrent load on the service: Introspect and Delegate from a few threads."""

    def __init__(self, harness: Harness, parent: str, child: str) -> None:
        self._harness = harness
        self._parent, self._child = parent, child
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.outcomes: list[Outcome] = []
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(LOAD_THREADS)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=DEADLINE_SECONDS * 3)

    def _run(self) -> None:
        give_up = time.monotonic() + LOAD_SECONDS_LIMIT
        with self._harness.client(timeout=DEADLINE_SECONDS) as client:
            calls = [
                ("Introspect child", lambda: client.introspect(self._child)),
                ("Introspect parent", lambda: client.introspect(self._parent)),
                ("Delegate", lambda: client.delegate(self._parent, "billing", ["warehouse.items.r"])),
            ]
            for index in range(LOAD_CALLS_PER_THREAD):
                if self._stop.is_set() or time.monotonic() > give_up:
                    return
                outcome = timed(*calls[index % len(calls)])
                with self._lock:
                    self.outcomes.append(outcome)

    def since(self, moment: float) -> list[Outcome]:
        """The calls that started at or after ``moment``."""
        with self._lock:
            return [o for o in self.outcomes if o.started >= moment]


def run_for(seconds: float) -> None:
    time.sleep(seconds)


# -- faults -----------------------------------------------------------------------------------------


def test_redis_down_at_start_up_is_not_serving_and_recovers_when_redis_comes(
    durable_redis: PrivateRedis,
) -> None:
    with running_service(durable_redis.url) as harness, harness.client(timeout=DEADLINE_SECONDS) as client:
        parent = harness.parent()
        assert health(harness) == "NOT_SERVING"

        down = [
            timed("Delegate", lambda: client.delegate(parent, "billing", ["warehouse.items.r"])),
            timed("Introspect parent", lambda: client.introspect(parent)),
            timed("Revoke", lambda: client.revoke(parent)),
            timed("RevokeSubject", lambda: client.revoke_subject("alice")),
            timed("GetChain", lambda: client.get_chain("some-chain")),
            timed("WatchRevocations", lambda: first_revocation(client)),
        ]
        assert_failed_closed_in_time(down)

        durable_redis.start()
        recovered_in = wait_for_health(harness, "SERVING")
        child = client.delegate(parent, "billing", ["warehouse.items.r"]).access_token
        assert client.introspect(child).active
        print(
            f"\ndown at start-up: slowest failing call {max(o.seconds for o in down):.3f}s; "
            f"SERVING {recovered_in:.2f}s after redis-server answered"
        )


def test_redis_killed_under_load_fails_every_call_closed_then_recovers(
    durable_redis: PrivateRedis,
) -> None:
    durable_redis.start()
    with running_service(durable_redis.url) as harness, harness.client(timeout=DEADLINE_SECONDS) as client:
        parent, child, chain_id = seed(harness, client)
        with Load(harness, parent, child) as load:
            run_for(0.5)
            durable_redis.kill()
            killed_at = time.monotonic()
            wait_for_health(harness, "NOT_SERVING")
            not_serving_after = time.monotonic() - killed_at
            run_for(1.5)
            after_kill = load.since(killed_at)
            calls = every_kind_of_call(client, parent, child, chain_id)
        assert len(after_kill) >= 10, "the load loop made too few calls after the kill"
        assert any(o.answer in ("ACTIVE", "OK") for o in load.outcomes if o.started < killed_at - 0.1)
        assert_failed_closed_in_time(after_kill)
        assert_failed_closed_in_time(calls)

        durable_redis.start()  # same port, same directory: the AOF comes back
        serving_in = wait_for_health(harness, "SERVING")
        assert client.introspect(child).active
        assert client.delegate(parent, "billing", ["warehouse.items.r"]).access_token
        print(
            f"\nkilled: {len(after_kill)} calls after the kill, all failed closed, slowest "
            f"{max(o.seconds for o in after_kill):.3f}s; NOT_SERVING {not_serving_after:.2f}s "
            f"after the kill; SERVING {serving_in:.2f}s after restart"
        )


def test_redis_frozen_fails_every_call_closed_within_the_deadline_then_recovers(
    durable_redis: PrivateRedis,
) -> None:
    durable_redis.start()
    with running_service(durable_redis.url) as harness, harness.client(timeout=DEADLINE_SECONDS) as client:
        parent, child, chain_id = seed(harness, client)
        with Load(harness, parent, child) as load:
            run_for(0.5)
            durable_redis.freeze()
            try:
                frozen_at = time.monotonic()
                wait_for_health(harness, "NOT_SERVING")
                not_serving_after = time.monotonic() - frozen_at
                run_for(1.5)
                calls = every_kind_of_call(client, parent, child, chain_id)
                load.__exit__()
                # Calls in flight when it froze may have been answered just before: judge only the
                # calls that started once it was frozen.
                after_freeze = load.since(frozen_at + 0.05)
            finally:
                durable_redis.thaw()
        assert len(after_freeze) >= 4, "the load loop made too few calls while Redis was frozen"
        assert_failed_closed_in_time(after_freeze)
        assert_failed_closed_in_time(calls)

        serving_in = wait_for_health(harness, "SERVING")
        assert client.introspect(child).active
        slowest = max(o.seconds for o in [*after_freeze, *calls])
        print(
            f"\nfrozen: {len(after_freeze) + len(calls)} calls, all failed closed, slowest "
            f"{slowest:.3f}s (deadline {DEADLINE_SECONDS}s); NOT_SERVING {not_serving_after:.2f}s after "
            f"SIGSTOP; SERVING {serving_in:.2f}s after SIGCONT"
        )


# -- durability -------------------------------------------------------------------------------------


def test_an_acknowledged_revocation_survives_kill_9_of_redis(durable_redis: PrivateRedis) -> None:
    durable_redis.start()
    with running_service(durable_redis.url) as harness, harness.client(timeout=DEADLINE_SECONDS) as client:
        parent, revoked_child, chain_id = seed(harness, client)
        other_parent, other_child, _ = seed(harness, client)
        _, subject_child, _ = seed(harness, client)
        kept = client.delegate(other_parent, "billing", ["warehouse.items.r"]).access_token
        client.revoke_chain(chain_id, justification="durability test")
        client.revoke(other_child)
        subject = client.introspect(subject_child).subject
        assert subject
        # Acknowledged: the calls returned. Now kill -9 before Redis could do anything more.
        durable_redis.kill()
        durable_redis.start()
        wait_for_health(harness, "SERVING")

        assert not client.introspect(revoked_child).active
        assert not client.introspect(parent).active
        assert not client.introspect(other_child).active
        assert client.introspect(kept).active  # records survived too
        client.revoke_subject(subject)
        durable_redis.kill()
        durable_redis.start()
        wait_for_health(harness, "SERVING")
        assert not client.introspect(subject_child).active


def test_the_service_refuses_to_start_on_redis_without_aof_unless_overridden(tmp_path: Path) -> None:
    volatile = PrivateRedis(tmp_path / "redis", {**DURABLE, "appendonly": "no"}).start()
    try:
        with pytest.raises(UnsafePersistence, match=r"appendonly is 'no'.*allow_unsafe_persistence"):
            start_harness(volatile.url, redis_allow_unsafe_persistence=False)

        with running_service(volatile.url, redis_allow_unsafe_persistence=True) as harness:
            assert wait_for_health(harness, "SERVING") < HEALTH_WAIT_SECONDS
            with harness.client(timeout=DEADLINE_SECONDS) as client:
                assert client.delegate(harness.parent(), "billing", ["warehouse.items.r"]).access_token
    finally:
        volatile.stop()


def test_redis_losing_its_aof_while_serving_turns_the_service_unavailable(
    durable_redis: PrivateRedis,
) -> None:
    durable_redis.start()
    with running_service(durable_redis.url) as harness, harness.client(timeout=DEADLINE_SECONDS) as client:
        _, child, _ = seed(harness, client)
        admin = durable_redis.client()
        try:
            admin.config_set("appendonly", "no")
            wait_for_health(harness, "NOT_SERVING")
            assert timed("Introspect", lambda: client.introspect(child)).answer == "UNAVAILABLE"

            admin.config_set("appendonly", "yes")
            wait_for_health(harness, "SERVING")
            assert client.introspect(child).active
        finally:
            admin.close()


# -- Redis Cluster ----------------------------------------------------------------------------------


def test_a_frozen_cluster_master_fails_its_chains_closed_and_the_service_recovers(tmp_path: Path) -> None:
    cluster = start_redis_cluster(tmp_path / "cluster")
    router = cluster.client()

    def master_of(key: str) -> int:
        port: int = router.get_node_from_key(key).port  # type: ignore[no-untyped-call]  # unannotated in redis-py
        return port

    # Freeze the master that holds none of the horizons these tokens are checked against (subject
    # alice, clients gateway and billing), so the chains on the other masters can still be checked.
    horizons = {master_of(f"it:h:{kind}") for kind in ("s:alice", "c:gateway", "c:billing")}
    frozen_port = next(node.port for node in cluster.nodes if node.port not in horizons)
    (frozen,) = [node for node in cluster.nodes if node.port == frozen_port]
    try:
        with (
            running_service(
                cluster.url, redis_mode="cluster", redis_allow_unsafe_persistence=True
            ) as harness,
            harness.client(timeout=DEADLINE_SECONDS) as client,
        ):
            on_frozen: list[tuple[str, str, str]] = []
            elsewhere: list[tuple[str, str, str]] = []
            for _ in range(60):
                seeded = seed(harness, client)
                (on_frozen if master_of(f"it:{{{seeded[2]}}}") == frozen_port else elsewhere).append(seeded)
                if len(on_frozen) >= 3 and len(elsewhere) >= 3:
                    break
            assert len(on_frozen) >= 3 and len(elsewhere) >= 3
            assert health(harness) == "SERVING"

            frozen.process.send_signal(signal.SIGSTOP)
            try:
                frozen_at = time.monotonic()
                wait_for_health(harness, "NOT_SERVING")
                not_serving_after = time.monotonic() - frozen_at
                with ThreadPoolExecutor(8) as pool:
                    stuck = list(
                        pool.map(lambda s: timed("Introspect", lambda: client.introspect(s[1])), on_frozen)
                    )
                    other = list(
                        pool.map(lambda s: timed("Introspect", lambda: client.introspect(s[1])), elsewhere)
                    )
            finally:
                frozen.process.send_signal(signal.SIGCONT)

            # The chains of the frozen master fail closed; the others are still checked, correctly.
            assert_failed_closed_in_time(stuck)
            assert [o.answer for o in other] == ["ACTIVE"] * len(other)
            serving_in = wait_for_health(harness, "SERVING")
            assert all(client.introspect(child).active for _, child, _ in [*on_frozen, *elsewhere])
            print(
                f"\ncluster master frozen: {len(stuck)} calls on its chains failed closed (slowest "
                f"{max(o.seconds for o in stuck):.3f}s), {len(other)} on other masters answered (slowest "
                f"{max(o.seconds for o in other):.3f}s); NOT_SERVING {not_serving_after:.2f}s after SIGSTOP; "
                f"SERVING {serving_in:.2f}s after SIGCONT"
            )
    finally:
        router.close()
        cluster.stop()
