"""Token exchange over HTTP beside gRPC ``Delegate`` (issue 17): ``python -m bench.oauth`` (run by
``make bench``).

Both faces of one service, in the same run: a private redis-server, the service in this process with its
gRPC and OAuth ports, and a load-generator process (its own GIL) that drives, interleaved and repeated,
gRPC ``Delegate`` (a stub per thread) and ``POST /oauth2/token`` (a keep-alive ``requests`` session per
thread), both with the same warm parent and the same request, at 1 and 8 in flight. Each figure is the
median over the repetitions; each repetition is bounded in time and in calls.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import requests

from delegation.v1 import delegation_pb2, delegation_pb2_grpc
from delegation_service.adapters.upstream_dev import DevUpstreamIssuer
from delegation_service.app import RunningApplication, build, ephemeral_keys, load_catalog
from delegation_service.config import Config
from delegation_service.dev import demo_catalog_path
from devtools.redis_server import start_redis_server

ISSUER = "https://delegation.bench.invalid"
UPSTREAM = "https://idp.bench.invalid"
SCOPES = ("directory.delegations.rw", "warehouse.items.rw")
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
MAX_CALLS = 50_000
"""A bound on the calls of one repetition, whatever the machine's speed."""


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _drive(callers: Sequence[Callable[[], bool]], seconds: float) -> dict[str, float]:
    """One thread per caller for ``seconds`` (and at most MAX_CALLS calls): rps, p50, p99, failures."""
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def worker(call: Callable[[], bool]) -> None:
        nonlocal failures
        while time.monotonic() < stop_at:
            with lock:
                if len(latencies) + failures >= MAX_CALLS:
                    return
            started = time.perf_counter()
            ok = call()
            elapsed = time.perf_counter() - started
            with lock:
                if ok:
                    latencies.append(elapsed)
                else:
                    failures += 1

    pool = [threading.Thread(target=worker, args=(call,)) for call in callers]
    began = time.monotonic()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    wall = time.monotonic() - began
    return {
        "rps": round(len(latencies) / wall, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2) if latencies else 0.0,
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 2) if latencies else 0.0,
        "failures": failures,
    }


def _grpc_caller(address: str, parent: str) -> Callable[[], Callable[[], bool]]:
    def make() -> Callable[[], bool]:
        stub = delegation_pb2_grpc.DelegationServiceStub(grpc.insecure_channel(address))
        request = delegation_pb2.DelegateRequest(
            parent_token=parent, client_id="billing", scopes=["warehouse.items.r"]
        )

        def call() -> bool:
            try:
                return bool(stub.Delegate(request, timeout=5).access_token)
            except grpc.RpcError:
                return False

        return call

    return make


def _http_caller(token_url: str, parent: str) -> Callable[[], Callable[[], bool]]:
    form = {
        "grant_type": TOKEN_EXCHANGE,
        "subject_token": parent,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "audience": "billing",
        "scope": "warehouse.items.r",
    }

    def make() -> Callable[[], bool]:
        session = requests.Session()

        def call() -> bool:
            try:
                answer = session.post(token_url, data=form, timeout=5)
            except requests.RequestException:
                return False
            return answer.status_code == 200

        return call

    return make


def _load(conn: Any, faces: dict[str, Callable[[], Callable[[], bool]]], seconds: float, reps: int) -> None:
    """The load generator (a process of its own): interleaved repetitions of each face and concurrency."""
    samples: dict[str, list[dict[str, float]]] = {}
    for _ in range(reps):
        for threads in (1, 8):
            for face, make in faces.items():
                callers = [make() for _ in range(threads)]
                _drive(callers, 0.3)  # warm-up: connections, caches
                samples.setdefault(f"{face}@{threads}", []).append(_drive(callers, seconds))
    conn.send(samples)
    conn.close()


def _load_process(conn: Any, address: str, token_url: str, parent: str, timing: tuple[float, int]) -> None:
    faces = {
        "grpc_delegate": _grpc_caller(address, parent),
        "http_token_exchange": _http_caller(token_url, parent),
    }
    _load(conn, faces, *timing)


def run(seconds: float, reps: int) -> dict[str, Any]:
    """Start redis and the service, measure both faces from another process, stop everything."""
    with tempfile.TemporaryDirectory(prefix="delegation-bench-oauth-") as workdir:
        redis = start_redis_server(Path(workdir))
        try:
            config = Config(
                listen="127.0.0.1:0",
                issuer=ISSUER,
                store="redis",
                redis_url=redis.url,
                redis_allow_unsafe_persistence=True,
                admin_listen="",
                oauth_listen="127.0.0.1:0",
                max_workers=8,
            ).validate()
            upstream = DevUpstreamIssuer(UPSTREAM)
            app = build(
                config,
                keys=ephemeral_keys("ES256"),
                catalog=load_catalog(demo_catalog_path()),
                extra_trusted=[upstream.trusted_issuer()],
            )
            running = app.serve(admin=True)
            assert isinstance(running, RunningApplication)
            assert running.oauth is not None
            parent = upstream.mint(subject="bench", scopes=SCOPES, client_id="gateway", lifetime_seconds=3600)
            try:
                receive, send = multiprocessing.Pipe(duplex=False)
                process = multiprocessing.get_context("spawn").Process(
                    target=_load_process,
                    args=(
                        send,
                        f"127.0.0.1:{running.port}",
                        running.oauth.base_url + "/oauth2/token",
                        parent,
                        (seconds, reps),
                    ),
                )
                process.start()
                # Bounded: 4 runs per repetition, each with its warm-up, and room to start the process.
                if not receive.poll(timeout=reps * 4 * (seconds + 0.3) + 60):
                    process.kill()
                    raise RuntimeError("the load generator did not report in time")
                samples: dict[str, list[dict[str, float]]] = receive.recv()
                process.join(timeout=30)
            finally:
                running.stop(0)
        finally:
            redis.stop()
    return {
        key: {
            metric: statistics.median(sample[metric] for sample in runs)
            for metric in ("rps", "p50_ms", "p99_ms", "failures")
        }
        for key, runs in samples.items()
    } | {"seconds_per_run": seconds, "repetitions": reps}


def report(results: dict[str, Any]) -> str:
    lines = [
        "| in flight | gRPC Delegate rps | p50 / p99 ms | HTTP token exchange rps | p50 / p99 ms "
        "| HTTP / gRPC |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for threads in (1, 8):
        g, h = results[f"grpc_delegate@{threads}"], results[f"http_token_exchange@{threads}"]
        ratio = h["rps"] / g["rps"] if g["rps"] else 0.0
        lines.append(
            f"| {threads} | {g['rps']:,.0f} | {g['p50_ms']} / {g['p99_ms']} | {h['rps']:,.0f} | "
            f"{h['p50_ms']} / {h['p99_ms']} | {ratio:.2f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.oauth", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one 1-second repetition")
    parser.add_argument("--results-dir", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    results = run(1.0 if args.quick else 3.0, 1 if args.quick else 3)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "oauth.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.results_dir / "oauth.md").write_text(report(results) + "\n")
    print("bench.oauth: HTTP token exchange beside gRPC Delegate (same service, same run, warm parent)")
    print(report(results))
    rows = [results[k] for k in results if "@" in k]
    return 0 if all(r["failures"] == 0 and r["rps"] > 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
