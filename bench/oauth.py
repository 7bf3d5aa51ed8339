"""Token exchange over HTTP on both OAuth servers beside gRPC ``Delegate`` (issues 17 and 19):
``python -m bench.oauth`` (run by ``make bench``).

One service in this process, over a private redis-server, with its gRPC port and two OAuth ports on the
same use cases: ``oauth.server = "threads"`` (the standard library's) and ``"granian"`` (the fast-http
extra). A load-generator process of its own (its own GIL, asyncio: ``grpc.aio`` and aiohttp, so it is
not the bottleneck) drives, interleaved and repeated, gRPC ``Delegate`` and ``POST /oauth2/token`` on
each port, with the same warm parent and the same request, at 1 and 64 in flight. For each run: rps,
p50/p99 latency, and the server's CPU per call (``os.times()`` of this process around the measured
window; the load generator's own CPU per call beside it). Each figure is the median over the
repetitions, with min-max; every run is bounded in time and in calls. The service logs as ``serve``
does (JSON lines, to a file in the work directory).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.common import (
    CHILD_CLIENT,
    CHILD_SCOPES,
    PARENT_CLIENT,
    PARENT_LIFETIME_SECONDS,
    PARENT_SCOPES,
    SERVICE_ISSUER,
    UPSTREAM_ISSUER,
    token_exchange_body,
)
from delegation_service import logs
from delegation_service.adapters.upstream_dev import DevUpstreamIssuer
from delegation_service.app import Application, RunningApplication, build, ephemeral_keys, load_catalog
from delegation_service.config import Config
from delegation_service.dev import demo_catalog_path
from delegation_service.transport.oauth.protocol import OAuthServer
from devtools.redis_server import start_redis_server

FACES = ("grpc_delegate", "http_threads", "http_granian")
LABELS = {
    "grpc_delegate": "gRPC `Delegate`",
    "http_threads": "HTTP token exchange, threads",
    "http_granian": "HTTP token exchange, granian",
}
CONCURRENCIES = (1, 64)
MAX_CALLS = 60_000
"""A bound on the calls of one run, whatever the machine's speed."""
WARM_UP_SECONDS = 0.5
CALL_TIMEOUT_SECONDS = 5.0


# --- the load generator (a process of its own) ---------------------------------------------------


async def _drive_grpc(
    address: str, parent: str, in_flight: int, seconds: float, conn: Connection
) -> dict[str, Any]:
    import grpc.aio  # noqa: PLC0415 (the load generator's process only)

    from delegation.v1 import delegation_pb2, delegation_pb2_grpc  # noqa: PLC0415

    request = delegation_pb2.DelegateRequest(
        parent_token=parent, client_id=CHILD_CLIENT, scopes=list(CHILD_SCOPES)
    )
    # A connection per 16 in flight (a local subchannel pool each: separate TCP connections).
    channels = [
        grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(max(1, in_flight // 16))
    ]
    stubs = [delegation_pb2_grpc.DelegationServiceStub(channel) for channel in channels]

    async def call(index: int) -> bool:
        try:
            answer = await stubs[index % len(stubs)].Delegate(request, timeout=CALL_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError:
            return False
        return bool(answer.access_token)

    try:
        return await _drive(call, in_flight, seconds, conn)
    finally:
        for channel in channels:
            await channel.close()


async def _drive_http(
    url: str, parent: str, in_flight: int, seconds: float, conn: Connection
) -> dict[str, Any]:
    import aiohttp  # noqa: PLC0415

    body = token_exchange_body(parent)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT_SECONDS)
    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def call(index: int) -> bool:
            try:
                async with session.post(url, data=body, headers=headers) as answer:
                    await answer.read()
                    return answer.status == 200
            except (aiohttp.ClientError, TimeoutError):
                return False

        return await _drive(call, in_flight, seconds, conn)


async def _drive(call: Any, in_flight: int, seconds: float, conn: Connection) -> dict[str, Any]:
    """``in_flight`` callers: a warm-up, then ``seconds`` (at most MAX_CALLS calls) measured; says
    ``measuring`` on ``conn`` when the measured window opens, so the server's CPU is read around it."""
    latencies: list[float] = []
    failures = warm_up_failures = 0
    measuring = False
    stop_at = time.monotonic() + WARM_UP_SECONDS

    async def caller(index: int) -> None:
        nonlocal failures, warm_up_failures
        while time.monotonic() < stop_at and len(latencies) + failures < MAX_CALLS:
            started = time.perf_counter()
            ok = await call(index)
            if not measuring:
                warm_up_failures += not ok
            elif ok:
                latencies.append(time.perf_counter() - started)
            else:
                failures += 1

    await asyncio.gather(*(caller(i) for i in range(in_flight)))
    conn.send("measuring")
    measuring = True
    began, cpu = time.monotonic(), _cpu()
    stop_at = began + seconds
    await asyncio.gather(*(caller(i) for i in range(in_flight)))
    wall, cpu = time.monotonic() - began, _cpu() - cpu
    latencies.sort()
    calls = len(latencies)
    return {
        "calls": calls,
        "failures": failures,
        "warm_up_failures": warm_up_failures,
        "wall_seconds": wall,
        "p50_ms": latencies[calls // 2] * 1000 if calls else 0.0,
        "p99_ms": latencies[min(calls - 1, round(0.99 * (calls - 1)))] * 1000 if calls else 0.0,
        "loadgen_cpu_us_per_call": cpu / calls * 1e6 if calls else 0.0,
    }


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def _load_generator(conn: Connection, targets: dict[str, str], parent: str) -> None:
    """Serve ``(face, in_flight, seconds)`` commands until ``None``."""
    with contextlib.suppress(ImportError):
        import uvloop  # noqa: PLC0415

        uvloop.install()
    while (command := conn.recv()) is not None:
        face, in_flight, seconds = command
        target = targets[face]
        if face == "grpc_delegate":
            result = asyncio.run(_drive_grpc(target, parent, in_flight, seconds, conn))
        else:
            result = asyncio.run(_drive_http(target, parent, in_flight, seconds, conn))
        conn.send(result)
    conn.close()


# --- the service and the runs ----------------------------------------------------------------------


def _granian_port(application: Application) -> OAuthServer | None:
    """The same application's OAuth port on granian (``None``, with a note, without the extra)."""
    config = dataclasses.replace(application.config, oauth_server="granian")
    try:
        return dataclasses.replace(application, config=config).oauth_server("127.0.0.1:0").start()
    except ValueError as missing:  # ConfigError: granian is not installed
        print(f"bench.oauth: granian skipped: {missing}", file=sys.stderr)
        return None


def run(seconds: float, reps: int, log_level: str) -> dict[str, Any]:
    """Start redis and the service, measure every face from another process, stop everything."""
    with tempfile.TemporaryDirectory(prefix="delegation-bench-oauth-") as workdir:
        redis = start_redis_server(Path(workdir))
        log_file = (Path(workdir) / "service.log").open("w")
        try:
            with contextlib.redirect_stdout(log_file):
                logs.configure(log_level)
            config = Config(
                listen="127.0.0.1:0",
                issuer=SERVICE_ISSUER,
                store="redis",
                redis_url=redis.url,
                redis_allow_unsafe_persistence=True,
                admin_listen="",
                oauth_listen="127.0.0.1:0",
                max_workers=8,
            ).validate()
            upstream = DevUpstreamIssuer(UPSTREAM_ISSUER)
            application = build(
                config,
                keys=ephemeral_keys("ES256"),
                catalog=load_catalog(demo_catalog_path()),
                extra_trusted=[upstream.trusted_issuer()],
            )
            running = application.serve(admin=True)
            assert isinstance(running, RunningApplication)
            assert running.oauth is not None
            granian = _granian_port(application)
            parent = upstream.mint(
                subject="bench",
                scopes=PARENT_SCOPES,
                client_id=PARENT_CLIENT,
                lifetime_seconds=PARENT_LIFETIME_SECONDS,
            )
            targets = {
                "grpc_delegate": f"127.0.0.1:{running.port}",
                "http_threads": running.oauth.base_url + "/oauth2/token",
            }
            if granian is not None:
                targets["http_granian"] = granian.base_url + "/oauth2/token"
            try:
                samples = _measure(targets, parent, seconds, reps)
            finally:
                if granian is not None:
                    granian.stop(0)
                running.stop(0)
                application.close()
        finally:
            logging.getLogger().handlers[:] = []  # they wrote to the work directory's file
            log_file.close()
            redis.stop()
    return summarize(samples) | {"seconds_per_run": seconds, "repetitions": reps, "log_level": log_level}


def _measure(
    targets: dict[str, str], parent: str, seconds: float, reps: int
) -> dict[str, list[dict[str, Any]]]:
    ours, theirs = multiprocessing.Pipe()
    process = multiprocessing.get_context("spawn").Process(
        target=_load_generator, args=(theirs, targets, parent), daemon=True
    )
    process.start()
    samples: dict[str, list[dict[str, Any]]] = {}
    limit = seconds + WARM_UP_SECONDS + 2 * CALL_TIMEOUT_SECONDS + 30  # the first also starts the process
    try:
        for _ in range(reps):
            for in_flight in CONCURRENCIES:
                for face in targets:
                    ours.send((face, in_flight, seconds))
                    if not ours.poll(limit) or ours.recv() != "measuring":
                        raise RuntimeError(f"the load generator did not start {face}@{in_flight} in time")
                    before = _cpu()
                    if not ours.poll(limit):
                        raise RuntimeError(f"the load generator did not finish {face}@{in_flight} in time")
                    result: dict[str, Any] = ours.recv()
                    cpu = _cpu() - before
                    calls = result["calls"]
                    result["rps"] = calls / result["wall_seconds"] if result["wall_seconds"] else 0.0
                    result["server_cpu_us_per_call"] = cpu / calls * 1e6 if calls else 0.0
                    samples.setdefault(f"{face}@{in_flight}", []).append(result)
        ours.send(None)
        process.join(timeout=10)
    finally:
        if process.is_alive():
            process.kill()
    return samples


def summarize(samples: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per face and concurrency: the median of each figure over the repetitions, with min and max."""
    results: dict[str, Any] = {}
    for key, runs in samples.items():
        row: dict[str, Any] = {
            "failures": sum(r["failures"] for r in runs),
            "warm_up_failures": sum(r["warm_up_failures"] for r in runs),
            "runs": len(runs),
        }
        for metric in ("rps", "p50_ms", "p99_ms", "server_cpu_us_per_call", "loadgen_cpu_us_per_call"):
            values = [r[metric] for r in runs]
            row[metric] = round(statistics.median(values), 2)
            row[f"{metric}_min"] = round(min(values), 2)
            row[f"{metric}_max"] = round(max(values), 2)
        results[key] = row
    return results


def report(results: dict[str, Any]) -> str:
    lines = [
        f"{results['repetitions']} interleaved repetitions of {results['seconds_per_run']:g} s per run; "
        "median (min-max); server CPU is this process's (the service), per call",
        "",
        "| face | in flight | rps | p50 / p99 ms | server CPU µs/call | load gen CPU µs/call | rps x gRPC |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for in_flight in CONCURRENCIES:
        grpc_rps = results.get(f"grpc_delegate@{in_flight}", {}).get("rps", 0.0)
        for face in FACES:
            row = results.get(f"{face}@{in_flight}")
            if row is None:
                continue
            ratio = row["rps"] / grpc_rps if grpc_rps else 0.0
            lines.append(
                f"| {LABELS[face]} | {in_flight} "
                f"| {row['rps']:,.0f} ({row['rps_min']:,.0f}-{row['rps_max']:,.0f}) "
                f"| {row['p50_ms']:.2f} / {row['p99_ms']:.2f} "
                f"| {row['server_cpu_us_per_call']:,.0f} ({row['server_cpu_us_per_call_min']:,.0f}-"
                f"{row['server_cpu_us_per_call_max']:,.0f}) "
                f"| {row['loadgen_cpu_us_per_call']:,.0f} | {ratio:.2f} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.oauth", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one 1-second repetition")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per run (default 3)")
    parser.add_argument("--repetitions", type=int, default=3, help="interleaved repetitions (default 3)")
    parser.add_argument(
        "--log-level", default="INFO", help="the service's log level (default INFO, as serve)"
    )
    parser.add_argument("--results-dir", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    seconds, reps = (1.0, 1) if args.quick else (min(args.seconds, 10.0), min(max(args.repetitions, 1), 5))
    results = run(seconds, reps, args.log_level)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "oauth.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.results_dir / "oauth.md").write_text(report(results) + "\n")
    print(
        "bench.oauth: HTTP token exchange on both OAuth servers beside gRPC Delegate "
        "(one service, warm parent)"
    )
    print(report(results))
    rows = [results[k] for k in results if "@" in k]
    for key in (k for k in results if "@" in k and results[k]["failures"] + results[k]["warm_up_failures"]):
        print(
            f"{key}: {results[key]['failures']} failed calls, {results[key]['warm_up_failures']} in warm-ups"
        )
    return 0 if all(r["failures"] == 0 and r["warm_up_failures"] == 0 and r["rps"] > 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
