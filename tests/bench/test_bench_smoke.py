"""A short smoke run of the benchmark harness (`python -m bench --quick`): it runs, reports every figure,
and nothing failed. No timing assertions: the figures of a quick run on a shared machine mean nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

SERVICE_RPCS = ("Delegate", "DelegateWarm", "Introspect", "Revoke", "RevokeChain")
SCENARIOS = (
    [f"service/{rpc}/c{c}" for rpc in SERVICE_RPCS for c in (1, 64)]
    + [f"floor/{rpc}/c{c}" for rpc in ("Delegate", "Introspect") for c in (1, 64)]
    + ["echo/Echo/c1", "echo/Echo/c64"]
    + [f"{target}/{rpc}/c64" for target in ("service-2p", "floor-2p") for rpc in ("Delegate", "Introspect")]
)
MEDIAN_KEYS = {
    "rps",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "server_cpu_ms_per_call",
    "redis_cpu_ms_per_call",
    "loadgen_cpu_ms_per_call",
    "errors",
    "calls",
    "runs",
    "redis_commands_per_call",
}
COMPARISON_KEYS = {"scenario", "floor", "rps_ratio", "p99_ratio", "cpu_ratio", "rps_ratio_vs_echo"}
MEMORY_KEYS = {
    "bytes_per_child_in_big_chain",
    "bytes_per_token_in_1_child_chains",
    "memory_usage_1_child_chain",
    "memory_usage_records_per_child_big_chain",
    "memory_usage_index_per_child_big_chain",
}
CHAIN_KEYS = {"chain_1_ms", "chain_big_ms", "ratio", "big_chain_children", "big_dry_run_count", "errors"}


@pytest.mark.redis
@pytest.mark.timeout(300)
def test_quick_bench_reports_every_figure_without_errors(tmp_path: Path) -> None:
    results = tmp_path / "results"
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--results-dir", str(results), "--budget", "200"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]

    data = json.loads((results / "bench.json").read_text())
    assert {
        "meta",
        "scenarios",
        "comparisons",
        "process_scaling",
        "open_streams",
        "revoke_chain_scale",
        "memory",
        "round_trips",
        "errors_total",
    } <= data.keys()
    assert data["errors_total"] == 0
    assert not data["meta"]["incomplete"]

    for key in SCENARIOS:
        scenario = data["scenarios"][key]
        assert scenario["median"].keys() >= MEDIAN_KEYS, key
        assert scenario["median"]["errors"] == 0, (key, [r["error_kinds"] for r in scenario["runs"]])
        assert scenario["median"]["calls"] > 0, key

    compared = {row["scenario"]: row for row in data["comparisons"]}
    for key in SCENARIOS:
        if key.startswith("service"):
            assert compared[key].keys() >= COMPARISON_KEYS, key
            assert compared[key]["rps_ratio"] is not None, key

    # Delegate beside idle followers is compared, per concurrency, with the same server without them.
    streams = data["open_streams"]
    assert streams and all(row["rps_ratio"] is not None and row["errors"] == 0 for row in streams)
    assert {row["open_streams"] for row in streams} == {100}  # --quick holds 100

    assert data["revoke_chain_scale"].keys() >= CHAIN_KEYS
    assert data["revoke_chain_scale"]["errors"] == 0
    # The dry run sees the whole big chain (its children and its root): the loader wrote every record.
    chain = data["revoke_chain_scale"]
    assert chain["big_dry_run_count"] == chain["big_chain_children"] + 1
    assert data["memory"].keys() >= MEMORY_KEYS
    assert data["memory"]["refused_writes"] == 0
    for rpc in SERVICE_RPCS:
        census = data["round_trips"][f"service/{rpc}"]
        assert census["errors"] == 0
        assert census["per_call"] >= 1
    assert len(data["process_scaling"]) == 4
    # Every key the service writes expires with what it describes.
    assert data["keys_without_ttl"]["scanned"] > 0
    assert data["keys_without_ttl"]["without_ttl"] == 0, data["keys_without_ttl"]["by_shape"]
    # Service/floor ratios are also paired per repetition (one repetition in --quick).
    assert all(row["pairs"] >= 1 for row in data["comparisons"] if row["floor_rps"])
    # One round trip per RPC is the design (SPEC §4): the census shows it, background polls left out.
    assert data["round_trips"]["service/Delegate"]["per_call"] == 1

    # The OAuth face answers token exchange on each HTTP server model, beside gRPC Delegate.
    for target in ("service-http", "service-granian"):
        for rpc in ("TokenExchange", "TokenExchangeWarm"):
            for concurrency in (1, 64):
                exchange = data["scenarios"][f"{target}/{rpc}/c{concurrency}"]["median"]
                assert exchange["errors"] == 0 and exchange["calls"] > 0, (target, rpc, concurrency)

    # The real peer (oidc-provider, Node) runs beside Delegate wherever Node is installed, as in CI.
    if shutil.which("node") and shutil.which("npm"):
        assert data["meta"]["peer"]["skipped"] is None, data["meta"]["peer"]
        for concurrency in (1, 64):
            peer = data["scenarios"][f"peer/Grant/c{concurrency}"]["median"]
            assert peer["errors"] == 0 and peer["calls"] > 0
        rows = {row["scenario"]: row for row in data["peer"]}
        assert rows["service/Delegate/c64"]["per_core_ratio"] is not None
        assert rows["service-granian/TokenExchange/c64"]["per_core_ratio_paired"] is not None
        assert "Against a real peer" in (results / "bench.md").read_text()
    else:
        assert data["meta"]["peer"]["skipped"]

    table = (results / "bench.md").read_text()
    assert "Service vs floor" in table and "rps xfloor" in table
    assert (results / "bench.png").read_bytes().startswith(b"\x89PNG")
