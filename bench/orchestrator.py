"""The bench run: start Redis, the servers and the load generator; measure; write the results.

Order of a run: private ``redis-server``; the servers (service, service on 2 processes, minimal floor,
minimal floor on 2 processes, bare echo), each a separate process on the same gRPC server model; the load
generator (a separate process); pools of tokens minted through the service; the cost of scale (memory per
tracked token, RevokeChain on a chain of 1 and of N children); a round-trip census; then the measured
phases, all scenarios shuffled within each repetition and repeated ``--reps`` times; finally medians,
ratios, JSON, Markdown and the PNG chart.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import multiprocessing
import os
import platform
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from bench import loadgen, peer, profiling, report, scale
from bench.common import (
    cpu_seconds,
    loadavg,
    write_private_key,
)
from delegation_service import service
from delegation_service.adapters import jwt_codec
from delegation_service.adapters.keys import generate_signing_key
from delegation_service.client import DelegationClient
from delegation_service.config import Config
from delegation_service.transport.auth import operator_secret_digest
from devtools.redis_server import RedisServer, start_redis_server, stop_process

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVER_START_TIMEOUT_SECONDS = 60.0
LOADGEN_REPLY_TIMEOUT_SECONDS = 300.0
CHAIN_CALL_TIMEOUT_SECONDS = 120.0
CHAIN_REPEATS = 3
HTTP_SERVER_MODELS = {"service-http": "threads", "service-granian": "granian"}
"""The bench target of each ``oauth.server`` the service offers."""

# Bounds on calls per measured phase, as calls per second of the phase's duration (the time bound
# usually ends a phase first). Fresh tokens (parents for Delegate, children for Introspect) are minted
# before a phase, so such a scenario's first run mints for a lower rate; later runs mint for the rate
# the earlier ones reached, and half again.
MAX_RPS_BOUND = {1: 5000, 64: 15000}
FRESH_TOKEN_RPCS = frozenset({"Delegate", "Introspect", "TokenExchange"})
FRESH_TOKEN_RPS_BOUND = 4000


@dataclass(frozen=True)
class Settings:
    """Everything a run is parametrised by."""

    duration: float
    warmup: float
    reps: int
    concurrencies: tuple[int, ...]
    chain_size: int
    small_chains: int
    pool_size: int
    census_calls: int
    max_workers: int
    open_streams: int
    channels: int
    seed: int
    results_dir: Path
    budget_seconds: float
    log_level: str
    profile: bool
    profile_only: bool
    quick: bool


@dataclass(frozen=True)
class ScenarioSpec:
    """One measured scenario: a server (target), an RPC, a concurrency."""

    target: str
    rpc: str
    concurrency: int

    @property
    def key(self) -> str:
        return report.key_of(self.target, self.rpc, self.concurrency)


def scenario_list(
    concurrencies: Sequence[int], *, peer: bool, http_targets: Sequence[str] = ()
) -> list[ScenarioSpec]:
    """Every scenario of a run (the peer's only where it runs)."""
    specs = []
    for concurrency in concurrencies:
        for rpc in ("Delegate", "DelegateWarm", "Introspect", "IntrospectWarm", "Revoke", "RevokeChain"):
            specs.append(ScenarioSpec("service", rpc, concurrency))
        for rpc in ("Delegate", "Introspect"):
            specs.append(ScenarioSpec("floor", rpc, concurrency))
        specs.append(ScenarioSpec("echo", "Echo", concurrency))
        # The asyncio server model, prototyped on the floor and the echo (bench/server.py).
        specs.append(ScenarioSpec("floor-aio", "Delegate", concurrency))
        specs.append(ScenarioSpec("echo-aio", "Echo", concurrency))
    if 64 in concurrencies:
        for rpc in ("Delegate", "Introspect"):
            specs.append(ScenarioSpec("service-2p", rpc, 64))
            specs.append(ScenarioSpec("floor-2p", rpc, 64))
    for concurrency in concurrencies:
        specs.append(ScenarioSpec("service-streams", "Delegate", concurrency))
        if peer:
            specs.append(ScenarioSpec("peer", "Grant", concurrency))
        # The OAuth face (RFC 8693 over HTTP), on each HTTP server the service offers.
        for target in http_targets:
            specs.append(ScenarioSpec(target, "TokenExchange", concurrency))
            specs.append(ScenarioSpec(target, "TokenExchangeWarm", concurrency))
    return specs


# -- processes --------------------------------------------------------------------------------------------


@dataclass
class ServerGroup:
    """One or more server processes of one kind listening on one port."""

    name: str
    port: int
    processes: list[subprocess.Popen[bytes]]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids)

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.processes)


class Servers:
    """Starts the bench servers and stops them (only the processes it started)."""

    def __init__(self, workdir: Path, common_args: list[str]) -> None:
        self._workdir = workdir
        self._common = common_args
        self.groups: dict[str, ServerGroup] = {}
        self._logs: list[Any] = []

    def _spawn(
        self, name: str, index: int, kind: str, port: int, *, reuse: bool, extra: Sequence[str] = ()
    ) -> tuple[subprocess.Popen[bytes], int]:
        ready = self._workdir / f"{name}-{index}.ready"
        log = (self._workdir / f"{name}-{index}.log").open("wb")
        self._logs.append(log)
        command = [
            sys.executable,
            "-m",
            "bench.server",
            "--kind",
            kind,
            "--port",
            str(port),
            "--ready-file",
            str(ready),
            *self._common,
            *extra,
        ]
        if reuse:
            command.append("--reuse-port")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        }
        # Service logs (JSON lines, one audit line per call, as in production) go nowhere: stdout is the
        # log stream of `serve`, and writing it to a terminal would measure the terminal.
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log
        )
        deadline = time.monotonic() + SERVER_START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server {name}-{index} exited at start; see {log.name}")
            if ready.exists():
                return process, int(ready.read_text().split()[0])
            time.sleep(0.05)
        stop_process(process)
        raise RuntimeError(f"server {name}-{index} did not start within {SERVER_START_TIMEOUT_SECONDS} s")

    def start(self, name: str, kind: str, processes: int, extra: Sequence[str] = ()) -> ServerGroup:
        first, port = self._spawn(name, 0, kind, 0, reuse=processes > 1, extra=extra)
        group = ServerGroup(name, port, [first])
        self.groups[name] = group
        for index in range(1, processes):
            process, _ = self._spawn(name, index, kind, port, reuse=True, extra=extra)
            group.processes.append(process)
        return group

    def stop(self) -> None:
        for group in self.groups.values():
            for process in group.processes:
                stop_process(process)
        for log in self._logs:
            log.close()


def hold_streams(address: str, count: int, workdir: Path) -> subprocess.Popen[bytes]:
    """Start ``bench.streams`` holding ``count`` WatchRevocations streams open; wait until all are."""
    ready = workdir / "streams.ready"
    log = (workdir / "streams.log").open("wb")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, "-m", "bench.streams", "--address", address, "--count", str(count)]
    process = subprocess.Popen(
        [*command, "--ready-file", str(ready)],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    log.close()
    deadline = time.monotonic() + SERVER_START_TIMEOUT_SECONDS
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process(process)
            said = (workdir / "streams.log").read_text(errors="replace").strip()[-500:]
            raise RuntimeError(f"bench.streams did not open {count} streams: {said or 'no output'}")
        time.sleep(0.1)
    return process


class LoadGen:
    """The load-generator process and its command pipe."""

    def __init__(self, upstream_key: Path, signing_key: Path, redis_url: str, operator_secret: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self.process = context.Process(
            target=loadgen.main,
            args=(child, str(upstream_key), str(signing_key), redis_url, operator_secret),
            name="bench-loadgen",
            daemon=True,
        )
        self.process.start()
        child.close()

    def call(self, message: dict[str, Any], timeout: float = LOADGEN_REPLY_TIMEOUT_SECONDS) -> dict[str, Any]:
        self._conn.send(message)
        if not self._conn.poll(timeout):
            raise RuntimeError(f"the load generator did not answer {message['op']} within {timeout} s")
        reply: dict[str, Any] = self._conn.recv()
        if not reply.get("ok"):
            raise RuntimeError(f"load generator {message['op']} failed: {reply.get('error')}")
        return reply

    @property
    def pid(self) -> int:
        return int(self.process.pid or 0)

    def stop(self) -> None:
        with suppress(RuntimeError, OSError, EOFError):
            self.call({"op": "stop"}, timeout=10)
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5)
        self._conn.close()


# -- the run ----------------------------------------------------------------------------------------------


class Run:
    """One ``make bench`` run."""

    def __init__(self, settings: Settings, workdir: Path, stack: ExitStack) -> None:
        self.s = settings
        self.workdir = workdir
        self.started = time.monotonic()
        self.rng = random.Random(settings.seed)  # noqa: S311 - an interleaving order, not a secret
        self.runs: dict[str, list[dict[str, Any]]] = {}
        self.incomplete = ""
        self.log: Callable[[str], None] = print

        upstream, signing = generate_signing_key("ES256"), generate_signing_key("ES256")
        self.upstream_key, self.signing_key = workdir / "upstream.pem", workdir / "service.pem"
        write_private_key(upstream, self.upstream_key)
        write_private_key(signing, self.signing_key)
        self.operator_secret = secrets.token_urlsafe(24)

        self.redis: RedisServer = start_redis_server(workdir)
        stack.callback(self.redis.stop)
        self.redis_client = self.redis.client()
        stack.callback(self.redis_client.close)
        common = [
            "--redis-url",
            self.redis.url,
            "--upstream-key",
            str(self.upstream_key),
            "--signing-key",
            str(self.signing_key),
            "--operator-sha256",
            operator_secret_digest(self.operator_secret),
            "--max-workers",
            str(settings.max_workers),
            "--log-level",
            settings.log_level,
        ]
        self.servers = Servers(workdir, common)
        stack.callback(self.servers.stop)
        self.servers.start("service", "service", 1)
        self.servers.start("floor", "minimal", 1)
        self.servers.start("echo", "echo", 1)
        self.servers.start("floor-aio", "minimal-aio", 1)
        self.servers.start("echo-aio", "echo-aio", 1)
        # The service answering RFC 8693 token exchange on its OAuth port (the group's measured port),
        # one process per HTTP server model it offers.
        for target, model in HTTP_SERVER_MODELS.items():
            self.servers.start(target, "service-http", 1, ["--oauth-server", model])
        if 64 in settings.concurrencies:
            self.servers.start("service-2p", "service", 2)
            self.servers.start("floor-2p", "minimal", 2)
        # The same service with idle followers holding streams open: its own key prefix, so that the
        # other scenarios' revocations never reach its followers while something else is measured.
        streams = self.servers.start("service-streams", "service", 1, ["--key-prefix", "bench-streams"])
        self.stream_holder = hold_streams(streams.address, settings.open_streams, workdir)
        stack.callback(stop_process, self.stream_holder)
        self.peer_skipped = ""
        try:
            peer_process, peer_port = peer.start(workdir)
        except peer.PeerUnavailable as error:
            self.peer_skipped = str(error)
            self.log(f"! the peer (oidc-provider) is skipped: {error}")
        else:  # stopped with the servers
            self.servers.groups["peer"] = ServerGroup("peer", peer_port, [peer_process])
        self.loadgen = LoadGen(self.upstream_key, self.signing_key, self.redis.url, self.operator_secret)
        stack.callback(self.loadgen.stop)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def scenarios(self) -> list[ScenarioSpec]:
        """This run's scenarios: the peer's only if it started."""
        return scenario_list(
            self.s.concurrencies,
            peer="peer" in self.servers.groups,
            http_targets=[t for t in HTTP_SERVER_MODELS if t in self.servers.groups],
        )

    # -- measured phases ------------------------------------------------------------------------------------

    def _max_calls(self, spec: ScenarioSpec) -> int:
        bound = int(MAX_RPS_BOUND.get(spec.concurrency, 15000) * self.s.duration) + 10
        if spec.rpc not in FRESH_TOKEN_RPCS:
            return bound
        # Fresh tokens are minted before the phase: as many as the earlier runs needed, and half again.
        previous = self.runs.get(spec.key)
        rate = statistics.median(r["rps"] for r in previous) * 1.5 if previous else FRESH_TOKEN_RPS_BOUND
        return min(bound, int(rate * self.s.duration) + 100)

    def phase(self, spec: ScenarioSpec, profile_to: Path | None = None) -> dict[str, Any]:
        group = self.servers.groups[spec.target]
        if not group.alive():
            raise RuntimeError(f"server {spec.target} died; see its log in {self.workdir}")
        phase = loadgen.Phase(
            address=group.address,
            rpc=spec.rpc,
            concurrency=spec.concurrency,
            duration=self.s.duration,
            max_calls=self._max_calls(spec),
            warmup=self.s.warmup,
            warmup_calls=int(self.s.warmup * FRESH_TOKEN_RPS_BOUND) + 10,
            channels=self.s.channels,
        )
        prepared = self.loadgen.call({"op": "prepare", "phase": dataclasses.asdict(phase)})
        recorder = None
        if profile_to is not None:
            recorder = profiling.start_recording(group.pids, self.s.duration, profile_to)
            time.sleep(0.5)  # let py-spy attach before the measured calls start
        stats_before = scale.commandstats(self.redis_client)
        server_before, redis_before = group.cpu(), cpu_seconds(self.redis.process.pid)
        result = self.loadgen.call({"op": "run"})
        server_after, redis_after = group.cpu(), cpu_seconds(self.redis.process.pid)
        stats_after = scale.commandstats(self.redis_client)
        if recorder is not None:
            _, stderr = recorder.communicate(timeout=self.s.duration + 30)
            if recorder.returncode != 0:
                self.log(f"  py-spy failed: {stderr.decode(errors='replace').strip()[-300:]}")
        calls = max(1, int(result["calls"]))
        result.pop("ok", None)
        result.update(
            {
                "server_cpu_ms_per_call": (server_after - server_before) * 1000 / calls,
                "redis_cpu_ms_per_call": (redis_after - redis_before) * 1000 / calls,
                "redis_commands_per_call": scale.per_call_delta(stats_before, stats_after, calls),
                "warmup_calls": prepared["warmup_calls"],
                "warmup_errors": sum(prepared["warmup_errors"].values()),
                "requests_build_s": round(prepared["build_s"], 3),
                "server_processes": len(group.pids),
            }
        )
        return result

    def measure(self) -> None:
        specs = self.scenarios()
        # A full repetition's worth of time, estimated, must fit in the budget before it starts a phase.
        per_phase = self.s.duration + self.s.warmup + 0.6
        for rep in range(self.s.reps):
            order = specs[:]
            self.rng.shuffle(order)
            for index, spec in enumerate(order):
                if self.elapsed() + per_phase > self.s.budget_seconds:
                    self.incomplete = (
                        f"time budget of {self.s.budget_seconds:.0f} s reached in repetition {rep + 1} "
                        f"after {index} of {len(order)} phases"
                    )
                    self.log(f"! {self.incomplete}")
                    return
                result = self.phase(spec)
                result["rep"] = rep
                self.runs.setdefault(spec.key, []).append(result)
                self.log(
                    f"  rep {rep + 1}/{self.s.reps} {spec.key:<32} {result['rps']:8.0f} rps  "
                    f"p50 {result['p50_ms']:6.2f}  p99 {result['p99_ms']:7.2f} ms  "
                    f"cpu {result['server_cpu_ms_per_call']:.3f} ms/call  errors {result['errors']}"
                )

    # -- scale, census, profile -------------------------------------------------------------------------

    def cost_of_scale(self) -> tuple[dict[str, Any], dict[str, Any]]:
        memory = scale.memory_per_token(self.redis_client, self.s.chain_size, self.s.small_chains)
        big_root, small_roots = memory.pop("big_root"), memory.pop("small_roots")
        small_chain = small_roots[0].chain_id
        timings: dict[str, list[float]] = {"1": [], "big": []}
        errors: list[str] = []
        with DelegationClient(
            self.servers.groups["service"].address, CHAIN_CALL_TIMEOUT_SECONDS, self.operator_secret
        ) as client:
            dry_count = None
            try:
                dry_count = client.revoke_chain(big_root.chain_id, dry_run=True).revoked_token_count
            except grpc.RpcError as error:
                errors.append(f"dry run: {_code(error)}")
            for _ in range(CHAIN_REPEATS):
                for name, chain_id in (("1", small_chain), ("big", big_root.chain_id)):
                    begin = time.perf_counter()
                    try:
                        client.revoke_chain(chain_id, justification="bench: chain size")
                        timings[name].append((time.perf_counter() - begin) * 1000)
                    except grpc.RpcError as error:
                        errors.append(f"chain {name}: {_code(error)}")
        one = statistics.median(timings["1"]) if timings["1"] else None
        big = statistics.median(timings["big"]) if timings["big"] else None
        chain = {
            "big_chain_children": self.s.chain_size,
            "chain_1_ms": one,
            "chain_big_ms": big,
            "ratio": round(big / one, 2) if one and big else None,
            "runs_ms": timings,
            "big_dry_run_count": dry_count,
            "errors": len(errors),
            "error_kinds": errors,
        }
        return chain, memory

    def census(self) -> dict[str, Any]:
        census_specs = [
            ScenarioSpec("service", rpc, 1)
            for rpc in ("Delegate", "DelegateWarm", "Introspect", "IntrospectWarm", "Revoke", "RevokeChain")
        ] + [ScenarioSpec("floor", "Delegate", 1), ScenarioSpec("floor", "Introspect", 1)]
        monitor = scale.CommandCensus(self.redis.port)
        results: dict[str, Any] = {}
        try:
            for spec in census_specs:
                group = self.servers.groups[spec.target]
                phase = loadgen.Phase(
                    address=group.address,
                    rpc=spec.rpc,
                    concurrency=1,
                    duration=30.0,
                    max_calls=self.s.census_calls,
                    warmup=5.0,
                    warmup_calls=3,
                    channels=1,
                )
                self.loadgen.call({"op": "prepare", "phase": dataclasses.asdict(phase)})
                monitor.take()
                result = self.loadgen.call({"op": "run"})
                counts = monitor.take()
                calls = max(1, int(result["calls"]))
                results[f"{spec.target}/{spec.rpc}"] = {
                    "calls": calls,
                    "errors": result["errors"],
                    "per_call": round(sum(counts.values()) / calls, 3),
                    "commands": {name: round(n / calls, 3) for name, n in sorted(counts.items())},
                }
        finally:
            monitor.stop()
        return results

    def profile(self) -> dict[str, Any]:
        if profiling.py_spy() is None:
            self.log("! --profile: py-spy not found; skipped")
            return {}
        summaries = {}
        for rpc in ("Delegate", "DelegateWarm", "Introspect", "IntrospectWarm"):
            spec = ScenarioSpec("service", rpc, 64)
            raw = self.s.results_dir / f"profile-{rpc}.txt"
            self.log(f"  profiling {spec.key} with py-spy -> {raw}")
            self.phase(spec, profile_to=raw)
            if raw.exists():
                summaries[spec.key] = profiling.summarize(raw)
        (self.s.results_dir / "profile.md").write_text(profiling.markdown(summaries))
        return summaries


def _code(error: grpc.RpcError) -> str:
    return error.code().name if isinstance(error, grpc.Call) else type(error).__name__


def _git_state() -> dict[str, Any]:
    """The commit measured, and whether the work tree differed from it."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    changed = git("status", "--porcelain", "--untracked-files=no", "--", "delegation_service")
    return {"commit": git("rev-parse", "--short", "HEAD") or None, "service_code_modified": bool(changed)}


def _verified_cache_setting() -> dict[str, Any] | None:
    """The service's verified-token cache setting and its default, if the service has one."""
    for name, spec in Config.__dataclass_fields__.items():
        if "cache" in name and "verified" in name:
            return {"setting": spec.metadata.get("path", name), "default": spec.default}
    return None


def _cache_detected() -> bool:
    """Whether the service seems to have a verified-token cache yet (a constructor parameter or attribute)."""
    names = [
        *inspect.signature(service.DelegationService.__init__).parameters,
        *inspect.signature(jwt_codec.JwtVerifier.__init__).parameters,
        *vars(service.DelegationService),
        *vars(jwt_codec.JwtVerifier),
    ]
    return any("cache" in name.lower() for name in names)


@contextmanager
def _workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="delegation-bench-") as name:
        path = Path(name)
        path.chmod(0o700)
        yield path


def execute(settings: Settings, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the whole bench; return (and write) the results."""
    settings.results_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    load_start = loadavg()
    with ExitStack() as stack:
        workdir = stack.enter_context(_workdir())
        log(f"bench: starting redis-server and servers in {workdir}")
        run = Run(settings, workdir, stack)
        run.log = log
        setup = run.loadgen.call(
            {"op": "setup", "address": run.servers.groups["service"].address, "pool_size": settings.pool_size}
        )
        log(
            f"bench: pools ready ({setup['introspect_pool']} / {setup['revoke_pool']} / "
            f"{setup['chain_pool']}), {run.elapsed():.0f} s"
        )
        if settings.profile_only:
            profiles = run.profile()
            log(f"bench: profiles in {settings.results_dir}/profile.md and profile-*.txt")
            return {"profiles": profiles, "errors_total": 0}
        log("bench: cost of scale (memory per token, RevokeChain on 1 vs N children)")
        chain, memory = run.cost_of_scale()
        log(
            f"bench: RevokeChain 1 child {chain['chain_1_ms']} ms, {settings.chain_size} children "
            f"{chain['chain_big_ms']} ms; {memory['bytes_per_child_in_big_chain']:.0f} B/child; "
            f"{run.elapsed():.0f} s"
        )
        log("bench: round-trip census (MONITOR)")
        census = run.census()
        log(f"bench: measuring {len(run.scenarios())} scenarios x {settings.reps} reps")
        run.measure()
        keys_without_ttl = scale.keys_without_ttl(run.redis_client)
        log(f"bench: {keys_without_ttl['without_ttl']} of {keys_without_ttl['scanned']} keys have no TTL")
        profiles = run.profile() if settings.profile else {}
        scenarios: dict[str, dict[str, Any]] = {}
        for spec in run.scenarios():
            runs = run.runs.get(spec.key, [])
            scenarios[spec.key] = {
                "target": spec.target,
                "rpc": spec.rpc,
                "concurrency": spec.concurrency,
                "median": report.aggregate(runs),
                "runs": runs,
            }
        scenario_medians: list[dict[str, Any]] = [s["median"] for s in scenarios.values()]
        errors_total = (
            sum(int(m.get("errors", 0)) for m in scenario_medians)
            + int(chain["errors"])
            + sum(int(c["errors"]) for c in census.values())
            + sum(setup["errors"].values())
            + int(memory["refused_writes"])
        )
        data: dict[str, Any] = {
            "meta": {
                "started": started.isoformat(timespec="seconds"),
                "wall_seconds": round(run.elapsed(), 1),
                "machine": f"{os.cpu_count()} cores, {platform.machine()}, Linux {platform.release()}",
                "python": platform.python_version(),
                "grpcio": grpc.__version__,
                "redis_server": run.redis_client.info("server").get("redis_version"),
                "server_model": f"grpc sync server, ThreadPoolExecutor({settings.max_workers}), 1 process "
                f"(2 processes on one port where marked)",
                "load_generator": f"separate process, grpc.aio, {settings.channels} channels at c>1 "
                "(the peer: aiohttp, one keep-alive connection per call in flight)",
                "peer": peer.describe(run.peer_skipped),
                "reps": settings.reps,
                "duration_s": settings.duration,
                "warmup_s": settings.warmup,
                "concurrencies": list(settings.concurrencies),
                "seed": settings.seed,
                "quick": settings.quick,
                "service_log_level": settings.log_level,
                "pools": setup,
                "loadavg_start": load_start,
                "loadavg_end": loadavg(),
                "verified_token_cache": _cache_detected() or _verified_cache_setting() is not None,
                "verified_token_cache_setting": _verified_cache_setting(),
                "git": _git_state(),
                "incomplete": run.incomplete,
            },
            "scenarios": scenarios,
            "comparisons": report.comparisons(scenarios),
            "process_scaling": report.scaling(scenarios),
            "open_streams": report.streams_effect(scenarios, settings.open_streams),
            "peer": report.peer_comparison(scenarios),
            "oauth_faces": report.oauth_faces(scenarios),
            "server_models": report.server_models(scenarios),
            "revoke_chain_scale": chain,
            "memory": memory,
            "keys_without_ttl": keys_without_ttl,
            "round_trips": census,
            "profiles": profiles,
            "errors_total": errors_total,
        }
    out = settings.results_dir
    report.write_json(out / "bench.json", data)
    table = report.markdown(data)
    (out / "bench.md").write_text(table)
    report.chart(data, out / "bench.png")
    log("")
    log(table)
    log(f"bench: results in {out}/bench.json, bench.md, bench.png ({data['meta']['wall_seconds']} s)")
    return data


def parse_args(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run: tiny counts, one repetition")
    parser.add_argument("--duration", type=float, help="seconds per measured phase (default 3; quick 0.5)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per phase (default 0.5; quick 0.15)")
    parser.add_argument("--reps", type=int, help="repetitions of every scenario (default 3; quick 1)")
    parser.add_argument(
        "--concurrency", default="1,64", help="calls in flight, comma-separated (default 1,64)"
    )
    parser.add_argument(
        "--chain-size", type=int, help="children of the big chain (default 100000; quick 2000)"
    )
    parser.add_argument(
        "--small-chains", type=int, help="1-child chains for memory (default 10000; quick 300)"
    )
    parser.add_argument(
        "--pool-size", type=int, help="tokens per pool minted at start (default 1500; quick 100)"
    )
    parser.add_argument(
        "--census-calls", type=int, help="calls per RPC in the round-trip census (default 50)"
    )
    parser.add_argument(
        "--max-workers",
        type=int,
        default=Config.max_workers,
        help=f"server threads per process (default: the service's default, {Config.max_workers})",
    )
    parser.add_argument(
        "--open-streams",
        type=int,
        help="idle WatchRevocations followers held on the service-streams server (default 1000; quick 100)",
    )
    parser.add_argument("--channels", type=int, default=8, help="client channels (connections) at c>1")
    parser.add_argument("--seed", type=int, default=20240601, help="shuffle seed of the interleaving")
    parser.add_argument("--results-dir", type=Path, default=REPO_ROOT / "bench" / "results")
    parser.add_argument(
        "--budget",
        type=float,
        default=540.0,
        help="wall-clock seconds after which no new phase starts (default 540)",
    )
    parser.add_argument(
        "--log-level", default="INFO", help="the service's log level (default INFO, as serve)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="afterwards, profile the service's Delegate and Introspect with py-spy",
    )
    parser.add_argument(
        "--profile-only",
        action="store_true",
        help="only profile (py-spy, --duration seconds per RPC): no measured runs, no scale costs",
    )
    args = parser.parse_args(argv)
    quick = bool(args.quick)

    def pick(value: Any, full: Any, short: Any) -> Any:
        return value if value is not None else (short if quick else full)

    concurrencies = tuple(sorted({int(c) for c in args.concurrency.split(",") if c.strip()}))
    if not concurrencies or min(concurrencies) < 1:
        parser.error("--concurrency needs positive integers")
    settings = Settings(
        duration=pick(args.duration, 3.0, 0.5),
        warmup=pick(args.warmup, 0.5, 0.15),
        reps=pick(args.reps, 3, 1),
        concurrencies=concurrencies,
        chain_size=pick(args.chain_size, 100_000, 2000),
        small_chains=pick(args.small_chains, 10_000, 300),
        pool_size=pick(args.pool_size, 1500, 100),
        census_calls=pick(args.census_calls, 50, 5),
        max_workers=args.max_workers,
        open_streams=pick(args.open_streams, 1000, 100),
        channels=args.channels,
        seed=args.seed,
        results_dir=args.results_dir,
        budget_seconds=args.budget,
        log_level=args.log_level,
        profile=bool(args.profile or args.profile_only),
        profile_only=bool(args.profile_only),
        quick=quick,
    )
    if settings.duration <= 0 or settings.reps < 1 or settings.chain_size < 1 or settings.small_chains < 1:
        parser.error("durations, repetitions and counts must be positive")
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    data = execute(settings)
    return 0 if data["errors_total"] == 0 else 1
