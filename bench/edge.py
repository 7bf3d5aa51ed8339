"""Revocation propagation to the edge (issue 13): ``python -m bench.edge`` (run by ``make bench``).

For N chain revocations while K edge verifiers follow the stream (K = 1 and 100), the time from
``RevokeChain``'s acknowledgement to the first refused check at every verifier: p50, p99, max. Also the
edge's local check throughput against ``Introspect`` in the same run, and the mirror's memory per
revoked entry. Everything runs on loopback: a private redis-server, the service in this process (a
thread pool large enough for K streams: the sync server holds one worker per open stream), K verifiers
in this process (each with its own channel and stream). One Python process means the verifiers and the
poller share one GIL: the figures include that contention, which a real edge (one per gateway) lacks.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from delegation_service.adapters.upstream_dev import DevUpstreamIssuer
from delegation_service.app import build, ephemeral_keys, load_catalog
from delegation_service.client import DelegationClient
from delegation_service.config import Config
from delegation_service.dev import demo_catalog_path
from delegation_service.domain.ports import RevocationEvent
from delegation_service.domain.revocation import RevocationKind
from delegation_service.edge.mirror import RevocationMirror
from delegation_service.edge.verifier import EdgeSettings, EdgeVerifier
from delegation_service.transport.auth import operator_secret_digest
from devtools.redis_server import start_redis_server

ISSUER = "https://delegation.bench.invalid"
UPSTREAM = "https://idp.bench.invalid"
SCOPES = ("directory.delegations.rw", "warehouse.items.rw")
WAIT_SECONDS = 30.0
"""The longest one revocation may take to reach every verifier before the run counts it as lost."""
THROUGHPUT_SECONDS = 2.0
THROUGHPUT_MAX_CALLS = 200_000
MEMORY_ENTRIES = 10_000


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _summary(values_ms: Sequence[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(values_ms), 1),
        "p99_ms": round(_percentile(values_ms, 0.99), 1),
        "max_ms": round(max(values_ms), 1),
    }


def propagation(address: str, secret: str, upstream: DevUpstreamIssuer, k: int, n: int) -> dict[str, Any]:
    """N revocations, K verifiers: ms from the acknowledgement to the first refusal at each verifier."""
    verifiers = [
        EdgeVerifier(grpc.insecure_channel(address), EdgeSettings(issuer=ISSUER, max_staleness_seconds=10.0))
        for _ in range(k)
    ]
    for verifier in verifiers:
        verifier.start()
    samples: list[float] = []
    lost = 0
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while any(v.staleness() > 10.0 for v in verifiers) and time.monotonic() < deadline:
            time.sleep(0.05)
        with DelegationClient(address, 10.0, secret) as client:
            for _ in range(n):
                parent = upstream.mint(
                    subject="bench", scopes=SCOPES, client_id="gateway", lifetime_seconds=600
                )
                child = client.delegate(parent, "billing", ["warehouse.items.r"])
                header = f"Bearer {child.access_token}"
                if not all(v.check(header).allowed for v in verifiers):
                    lost += 1
                    continue
                client.revoke_chain(child.chain_id)
                acknowledged = time.perf_counter()
                waiting = set(range(k))
                give_up = time.monotonic() + WAIT_SECONDS
                while waiting and time.monotonic() < give_up:
                    for index in list(waiting):
                        if not verifiers[index].check(header).allowed:
                            samples.append((time.perf_counter() - acknowledged) * 1000)
                            waiting.discard(index)
                    if waiting:
                        time.sleep(0.001)
                lost += len(waiting)
    finally:
        for verifier in verifiers:
            verifier.close()
    return {
        "verifiers": k,
        "revocations": n,
        "samples": len(samples),
        "lost": lost,
        **_summary(samples or [0]),
    }


def throughput(address: str, secret: str, upstream: DevUpstreamIssuer) -> dict[str, Any]:
    """Checks per second, one caller: the edge's local check against an Introspect round trip."""
    verifier = EdgeVerifier(
        grpc.insecure_channel(address), EdgeSettings(issuer=ISSUER, max_staleness_seconds=10.0)
    )
    verifier.start()
    try:
        with DelegationClient(address, 10.0, secret) as client:
            parent = upstream.mint(subject="bench", scopes=SCOPES, client_id="gateway", lifetime_seconds=600)
            token = client.delegate(parent, "billing", ["warehouse.items.r"]).access_token
            deadline = time.monotonic() + WAIT_SECONDS
            while verifier.staleness() > 10.0 and time.monotonic() < deadline:
                time.sleep(0.05)
            header = f"Bearer {token}"

            def rate(call: Any) -> float:
                calls, started = 0, time.perf_counter()
                while calls < THROUGHPUT_MAX_CALLS and time.perf_counter() - started < THROUGHPUT_SECONDS:
                    call()
                    calls += 1
                return calls / (time.perf_counter() - started)

            edge = rate(lambda: verifier.check(header))
            introspect = rate(lambda: client.introspect(token))
    finally:
        verifier.close()
    return {
        "edge_checks_per_s": round(edge),
        "introspect_per_s": round(introspect),
        "speedup": round(edge / introspect, 1),
    }


def mirror_memory() -> dict[str, Any]:
    """Bytes the mirror holds per revoked chain entry (tracemalloc, ids shaped like the service's)."""
    mirror = RevocationMirror()
    ids = [f"{i:022d}" for i in range(MEMORY_ENTRIES)]  # a chain id is 22 base64url characters
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for chain_id in ids:
        mirror.apply(RevocationEvent("", RevocationKind.CHAIN, chain_id, expires_at=2_000_000_000))
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    # The ids themselves arrive with each message; count them too, as the mirror keeps them.
    grown += sum(len(chain_id) + 49 for chain_id in ids)
    return {"entries": MEMORY_ENTRIES, "bytes_per_entry": round(grown / MEMORY_ENTRIES)}


def run(n: int, ks: Sequence[int]) -> dict[str, Any]:
    """Start redis and the service, measure, stop everything."""
    with tempfile.TemporaryDirectory(prefix="delegation-bench-edge-") as workdir:
        redis = start_redis_server(Path(workdir))
        secret = "dso_bench_edge_secret_0123456789"
        try:
            config = Config(
                listen="127.0.0.1:0",
                issuer=ISSUER,
                operator_token_sha256=(operator_secret_digest(secret),),
                store="redis",
                redis_url=redis.url,
                redis_allow_unsafe_persistence=True,
                access_mode="open",
            ).validate()
            upstream = DevUpstreamIssuer(UPSTREAM)
            app = build(
                config,
                keys=ephemeral_keys("ES256"),
                catalog=load_catalog(demo_catalog_path()),
                extra_trusted=[upstream.trusted_issuer()],
            )
            server = app.serve()
            address = f"127.0.0.1:{server.port}"
            try:
                results: dict[str, Any] = {
                    "propagation": [propagation(address, secret, upstream, k, n) for k in ks],
                    "throughput": throughput(address, secret, upstream),
                    "mirror_memory": mirror_memory(),
                }
            finally:
                server.stop(0)
        finally:
            redis.stop()
    return results


def report(results: dict[str, Any]) -> str:
    lines = [
        "| verifiers (K) | revocations | p50 ms | p99 ms | max ms | lost |",
        "|---|---|---|---|---|---|",
    ]
    for row in results["propagation"]:
        lines.append(
            f"| {row['verifiers']} | {row['revocations']} | {row['p50_ms']} | {row['p99_ms']} | "
            f"{row['max_ms']} | {row['lost']} |"
        )
    t, m = results["throughput"], results["mirror_memory"]
    lines.append("")
    lines.append(
        f"edge check {t['edge_checks_per_s']}/s vs Introspect {t['introspect_per_s']}/s "
        f"(one caller each): x{t['speedup']}; mirror {m['bytes_per_entry']} B per revoked entry"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.edge", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 revocations, K = 1 and 10")
    parser.add_argument("--revocations", type=int, help="N (default 30; quick 5)")
    parser.add_argument("--verifiers", default=None, help="K values, comma-separated (default 1,100)")
    parser.add_argument("--results-dir", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    n = args.revocations or (5 if args.quick else 30)
    ks = [int(k) for k in (args.verifiers or ("1,10" if args.quick else "1,100")).split(",")]
    results = run(n, ks)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "edge.json").write_text(json.dumps(results, indent=2) + "\n")
    print("bench.edge: revocation propagation, RevokeChain acknowledged -> refused at every verifier")
    print(report(results))
    lost = sum(row["lost"] for row in results["propagation"])
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
