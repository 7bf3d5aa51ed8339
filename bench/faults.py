"""``make faults``: what callers see when Redis stalls, and what a Sentinel failover loses.

Two scenarios, each on its own real processes on loopback ports (``redis-server`` with the durable
settings production needs, ``redis-server --sentinel``), with the service running in this process:

- **stall**: 64 callers keep one call each in flight (2 s deadlines) while ``redis-server`` is frozen by
  SIGSTOP for 3 s, then thawed. Figures: the share of the calls made while it was frozen that answered
  ``UNAVAILABLE``, the time from the freeze to the first fast refusal, and from the thaw to the first
  success.
- **failover**: a primary, one replica and three Sentinels; callers revoke subjects (one new subject
  per call) while the primary is SIGKILLed and Sentinel promotes the replica. Figure: how many
  acknowledged revocations the new primary lacks, with ``redis.min_replicas_acked`` = 1 and = 0.

The integration tests (``tests/integration/test_faults_stall.py``, ``test_sentinel_failover.py``) run
the same scenarios and assert on them; this script prints the figures. Every load loop is bounded in
calls and in time; the whole run takes well under three minutes.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import redis

from devtools.redis_server import LOOPBACK, RedisServer, free_loopback_port, start_redis_server, stop_process
from tests.integration.harness import Harness, start_harness

DURABLE_ARGS = ("--appendonly", "yes", "--appendfsync", "always", "--maxmemory-policy", "noeviction")
"""What production Redis needs (README "Redis durability"): every acknowledged write survives kill -9."""
DEADLINE_SECONDS = 2.0
STALL_CALLERS = 64
STALL_SECONDS = 3.0
CALLS_PER_CALLER = 400
"""Bound on the calls of one caller in a scenario (the time bound usually ends it first)."""
PAUSE_SECONDS = 0.02
"""A caller's pause between two calls: 64 callers stay ~64 calls in flight without spinning the CPU."""
FAST_SECONDS = 0.05
"""A refusal this quick did not wait on Redis."""
RESUME_MARGIN_SECONDS = 0.1
"""A call started this shortly before SIGCONT may reach the server after it, and rightly succeed: such
calls are not judged as calls made while Redis was stopped."""
RECOVERY_LIMIT_SECONDS = 10.0
FAILOVER_CALLERS = 8
FAILOVER_CALLS_PER_CALLER = 5000
FAILOVER_PAUSE_SECONDS = 0.005
"""Failover callers pause a little between calls: refused fast during the outage, unpaced callers spent
their whole count before the promotion (3,200 calls in 2.3 s) and no call was left to show how the new
primary answers. Paced, 5,000 calls last past the slowest promotion, and the time bound ends the load."""
FAILOVER_LOAD_BEFORE_KILL_SECONDS = 1.0
FAILOVER_LOAD_AFTER_PROMOTION_SECONDS = 1.0
SENTINEL_WAIT_SECONDS = 30.0
SERVICE = "mymaster"


@dataclass(frozen=True)
class Outcome:
    """One call: when it started and ended (monotonic seconds) and what it answered."""

    started: float
    ended: float
    answer: str  # "OK" or the status code's name
    subject: str = ""

    @property
    def seconds(self) -> float:
        """How long it took."""
        return self.ended - self.started


def call(action: Callable[[], object], subject: str = "") -> Outcome:
    """Run one call and record its outcome (never raises for a gRPC error)."""
    started = time.monotonic()
    try:
        action()
    except grpc.RpcError as error:
        answer = error.code().name if isinstance(error, grpc.Call) else "UNKNOWN"
    else:
        answer = "OK"
    return Outcome(started, time.monotonic(), answer, subject)


class Callers:
    """``count`` threads calling ``make_call(caller, index)`` until stopped, bounded in calls and time."""

    def __init__(
        self,
        count: int,
        make_call: Callable[[int, int], Outcome],
        limit_seconds: float,
        pause: float,
        calls_per_caller: int = CALLS_PER_CALLER,
    ) -> None:
        self._make_call = make_call
        self._calls_per_caller = calls_per_caller
        self._limit = limit_seconds
        self._pause = pause
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.outcomes: list[Outcome] = []
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(count)]

    def __enter__(self) -> Callers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=DEADLINE_SECONDS * 3)

    def _run(self, caller: int) -> None:
        give_up = time.monotonic() + self._limit
        for index in range(self._calls_per_caller):
            if self._stop.is_set() or time.monotonic() > give_up:
                return
            outcome = self._make_call(caller, index)
            with self._lock:
                self.outcomes.append(outcome)
            self._stop.wait(self._pause)

    def snapshot(self) -> list[Outcome]:
        """The outcomes so far."""
        with self._lock:
            return list(self.outcomes)


# -- stall ------------------------------------------------------------------------------------------


@dataclass
class StallResult:
    """What the callers saw around a freeze of ``redis-server`` (monotonic times)."""

    outcomes: list[Outcome]
    stalled_at: float
    resumed_at: float

    @property
    def while_stalled(self) -> list[Outcome]:
        """The calls that started while Redis was frozen, but for the last ``RESUME_MARGIN_SECONDS``."""
        return [
            o for o in self.outcomes if self.stalled_at <= o.started < self.resumed_at - RESUME_MARGIN_SECONDS
        ]

    @property
    def answers(self) -> Counter[str]:
        """How the calls made while Redis was frozen ended."""
        return Counter(o.answer for o in self.while_stalled)

    @property
    def unavailable_share(self) -> float:
        """The share of those calls answered ``UNAVAILABLE``."""
        stalled = self.while_stalled
        return sum(o.answer == "UNAVAILABLE" for o in stalled) / max(len(stalled), 1)

    @property
    def first_fast_refusal_seconds(self) -> float | None:
        """From the freeze to the end of the first call refused without waiting on Redis."""
        ends = [o.ended for o in self.while_stalled if o.answer == "UNAVAILABLE" and o.seconds < FAST_SECONDS]
        return min(ends) - self.stalled_at if ends else None

    @property
    def first_success_seconds(self) -> float | None:
        """From the thaw to the end of the first successful call."""
        ends = [o.ended for o in self.outcomes if o.answer == "OK" and o.ended >= self.resumed_at]
        return min(ends) - self.resumed_at if ends else None


def stall(
    freeze: Callable[[], None],
    thaw: Callable[[], None],
    harness: Harness,
    stall_seconds: float = STALL_SECONDS,
) -> StallResult:
    """Freeze Redis for ``stall_seconds`` under ``STALL_CALLERS`` callers, thaw it, wait for a success."""
    with harness.client(timeout=DEADLINE_SECONDS) as client:
        parent = harness.parent()
        child = client.delegate(parent, "billing", ["warehouse.items.r"]).access_token
        calls: list[Callable[[], object]] = [
            lambda: client.introspect(child),
            lambda: client.delegate(parent, "billing", ["warehouse.items.r"]),
            lambda: client.introspect(parent),
        ]
        limit = stall_seconds + RECOVERY_LIMIT_SECONDS + 2
        with Callers(STALL_CALLERS, lambda c, i: call(calls[(c + i) % 3]), limit, PAUSE_SECONDS) as callers:
            time.sleep(0.5)
            freeze()
            stalled_at = time.monotonic()
            try:
                time.sleep(stall_seconds)
            finally:
                thaw()
            resumed_at = time.monotonic()
            give_up = resumed_at + RECOVERY_LIMIT_SECONDS
            while time.monotonic() < give_up:
                if any(o.answer == "OK" and o.started >= resumed_at for o in callers.snapshot()):
                    break
                time.sleep(0.05)
            time.sleep(0.2)
        return StallResult(callers.snapshot(), stalled_at, resumed_at)


@contextmanager
def durable_redis(directory: Path, *extra: str) -> Iterator[RedisServer]:
    """A private ``redis-server`` with the durable settings (and ``extra`` arguments); stopped after."""
    server = start_redis_server(directory, lambda: (*DURABLE_ARGS, *extra))
    try:
        yield server
    finally:
        server.process.send_signal(signal.SIGCONT)
        server.stop()


def run_stall(directory: Path) -> StallResult:
    """The stall scenario on its own ``redis-server`` and service."""
    with durable_redis(directory / "stall") as server:
        harness = start_harness(server.url, redis_allow_unsafe_persistence=False)
        try:
            return stall(
                lambda: server.process.send_signal(signal.SIGSTOP),
                lambda: server.process.send_signal(signal.SIGCONT),
                harness,
            )
        finally:
            harness.server.stop(0)


# -- failover ---------------------------------------------------------------------------------------


@dataclass
class Sentinels:
    """A primary, its replica and three Sentinels monitoring them as ``mymaster``."""

    primary: RedisServer
    replica: RedisServer
    sentinels: list[subprocess.Popen[bytes]]
    ports: list[int]
    _probes: list[redis.Redis] = field(default_factory=list)

    @property
    def url(self) -> str:
        """``redis.url`` in sentinel mode."""
        return ",".join(f"{LOOPBACK}:{port}" for port in self.ports)

    def master_port(self) -> int | None:
        """The master's port as the first Sentinel that answers reports it."""
        for probe in self._probes:
            try:
                reply = probe.execute_command("SENTINEL", "get-master-addr-by-name", SERVICE)  # type: ignore[no-untyped-call]
            except redis.RedisError:
                continue
            if reply:
                return int(reply[1])
        return None

    def wait_until_ready(self) -> None:
        """Until the replica is in sync and every Sentinel knows the replica and the other Sentinels."""
        deadline = time.monotonic() + SENTINEL_WAIT_SECONDS
        replica = self.replica.client(socket_timeout=1)
        while True:
            try:
                synced = replica.info("replication").get("master_link_status") == "up"
                ready = synced and all(
                    len(probe.execute_command("SENTINEL", "replicas", SERVICE)) == 1  # type: ignore[no-untyped-call]
                    and len(probe.execute_command("SENTINEL", "sentinels", SERVICE)) == len(self.ports) - 1  # type: ignore[no-untyped-call]
                    for probe in self._probes
                )
            except redis.RedisError:
                ready = False
            if ready:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the Sentinels never saw the replica and each other")
            time.sleep(0.1)

    def wait_for_promotion(self) -> float:
        """Seconds until the Sentinels report the replica as master (bounded)."""
        start = time.monotonic()
        while self.master_port() != self.replica.port:
            if time.monotonic() - start > SENTINEL_WAIT_SECONDS:
                raise RuntimeError("Sentinel never promoted the replica")
            time.sleep(0.05)
        return time.monotonic() - start

    def stop(self) -> None:
        """Stop every process."""
        for probe in self._probes:
            probe.close()
        for process in self.sentinels:
            stop_process(process)
        self.replica.stop()
        self.primary.stop()


def start_sentinels(directory: Path) -> Sentinels:
    """Start a durable primary, a durable replica of it and three Sentinels (quorum 2)."""
    primary = start_redis_server(directory / "primary", lambda: DURABLE_ARGS)
    replica = start_redis_server(
        directory / "replica", lambda: (*DURABLE_ARGS, "--replicaof", LOOPBACK, str(primary.port))
    )
    processes: list[subprocess.Popen[bytes]] = []
    ports = []
    for index in range(3):
        port = free_loopback_port()
        folder = directory / f"sentinel-{index}"
        folder.mkdir(parents=True)
        conf = folder / "sentinel.conf"  # a Sentinel rewrites its config file: one each
        conf.write_text(
            f"port {port}\nbind {LOOPBACK}\ndir {folder}\n"
            f"sentinel monitor {SERVICE} {LOOPBACK} {primary.port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
        )
        processes.append(
            subprocess.Popen(
                ["redis-server", str(conf), "--sentinel"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        ports.append(port)
    probes = [redis.Redis(host=LOOPBACK, port=p, socket_timeout=1, socket_connect_timeout=1) for p in ports]
    sentinels = Sentinels(primary, replica, processes, ports, probes)
    try:
        sentinels.wait_until_ready()
    except BaseException:
        sentinels.stop()
        raise
    return sentinels


@dataclass
class FailoverResult:
    """The revocations made around a failover, and which acknowledged ones the new primary lacks."""

    min_replicas_acked: int
    outcomes: list[Outcome]
    killed_at: float
    promoted_after_seconds: float
    missing: list[str]

    @property
    def acknowledged(self) -> int:
        """Revocations the service acknowledged."""
        return sum(o.answer == "OK" for o in self.outcomes)

    @property
    def median_before_kill_ms(self) -> float:
        """The median time of a revocation acknowledged before the kill (what WAIT costs)."""
        before = [o.seconds for o in self.outcomes if o.answer == "OK" and o.ended < self.killed_at]
        return statistics.median(before) * 1000 if before else float("nan")

    @property
    def answers(self) -> Counter[str]:
        """How every revocation ended."""
        return Counter(o.answer for o in self.outcomes)


def failover(directory: Path, min_replicas_acked: int) -> FailoverResult:
    """Revoke subjects under load, SIGKILL the primary, let Sentinel promote; count what was lost."""
    prefix = "faults"
    sentinels = start_sentinels(directory)
    try:
        harness = start_harness(
            sentinels.url,
            redis_mode="sentinel",
            redis_sentinel_service=SERVICE,
            redis_key_prefix=prefix,
            redis_allow_unsafe_persistence=False,
            redis_min_replicas_acked=min_replicas_acked,
        )
        try:
            with harness.client(timeout=DEADLINE_SECONDS) as client:

                def revoke(caller: int, index: int) -> Outcome:
                    subject = f"s-{caller}-{index}"
                    return call(lambda: client.revoke_subject(subject), subject)

                limit = SENTINEL_WAIT_SECONDS + 10
                with Callers(
                    FAILOVER_CALLERS, revoke, limit, FAILOVER_PAUSE_SECONDS, FAILOVER_CALLS_PER_CALLER
                ) as callers:
                    time.sleep(FAILOVER_LOAD_BEFORE_KILL_SECONDS)
                    sentinels.primary.process.kill()
                    killed_at = time.monotonic()
                    promoted_after = sentinels.wait_for_promotion()
                    time.sleep(FAILOVER_LOAD_AFTER_PROMOTION_SECONDS)
            outcomes = callers.snapshot()
        finally:
            harness.server.stop(0)
        acknowledged = [o.subject for o in outcomes if o.answer == "OK"]
        new_primary = sentinels.replica.client(socket_timeout=5)
        pipeline = new_primary.pipeline(transaction=False)
        for subject in acknowledged:
            pipeline.exists(f"{prefix}:h:s:{subject}")
        found = pipeline.execute()
        missing = [s for s, present in zip(acknowledged, found, strict=True) if not present]
        return FailoverResult(min_replicas_acked, outcomes, killed_at, promoted_after, missing)
    finally:
        sentinels.stop()


# -- the report ---------------------------------------------------------------------------------------


def describe_stall(result: StallResult) -> list[str]:
    """The stall figures, one per line."""
    fast = result.first_fast_refusal_seconds
    success = result.first_success_seconds
    answers = ", ".join(f"{name} {count}" for name, count in result.answers.most_common())
    return [
        f"stall: Redis SIGSTOPped {result.resumed_at - result.stalled_at:.1f}s under {STALL_CALLERS} callers "
        f"in flight, {DEADLINE_SECONDS:.0f}s deadlines",
        f"  calls made while stopped: {len(result.while_stalled)} ({answers})",
        f"  share UNAVAILABLE: {result.unavailable_share:.1%}",
        f"  stall to first fast refusal: {'none' if fast is None else f'{fast * 1000:.0f} ms'}",
        f"  resume to first success: {'none' if success is None else f'{success * 1000:.0f} ms'}",
    ]


def describe_failover(result: FailoverResult) -> list[str]:
    """The failover figures, one per line."""
    answers = ", ".join(f"{name} {count}" for name, count in result.answers.most_common())
    return [
        f"failover, redis.min_replicas_acked = {result.min_replicas_acked}: primary SIGKILLed, replica "
        f"promoted after {result.promoted_after_seconds:.1f}s",
        f"  revocations: {len(result.outcomes)} ({answers}); median before the kill "
        f"{result.median_before_kill_ms:.1f} ms ({FAILOVER_CALLERS} callers)",
        f"  acknowledged and missing on the new primary: {len(result.missing)} of {result.acknowledged}",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Run both scenarios and print their figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="faults-")))
        lines = describe_stall(run_stall(directory))
        for option in (1, 0):
            lines += describe_failover(failover(directory / f"failover-{option}", option))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
