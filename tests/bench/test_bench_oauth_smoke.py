"""A short smoke run of the OAuth bench (`python -m bench.oauth --quick`): gRPC and both OAuth servers
answer, every figure is reported, no call failed. No timing assertions: a quick run's figures on a
shared machine mean nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_quick_oauth_bench_reports_every_face(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.oauth", "--quick", "--results-dir", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads((tmp_path / "oauth.json").read_text())
    for face in ("grpc_delegate", "http_threads", "http_granian"):
        for in_flight in (1, 64):
            row = figures[f"{face}@{in_flight}"]
            assert row["failures"] == 0
            assert row["rps"] > 0
            for metric in ("rps", "p50_ms", "p99_ms", "server_cpu_us_per_call", "loadgen_cpu_us_per_call"):
                assert row[f"{metric}_min"] <= row[metric] <= row[f"{metric}_max"]
            assert row["server_cpu_us_per_call"] > 0
    table = (tmp_path / "oauth.md").read_text()
    assert "HTTP token exchange, threads" in table and "HTTP token exchange, granian" in table
