"""A short smoke run of the OAuth bench (`python -m bench.oauth --quick`): both faces answer, every
figure is reported, no call failed. No timing assertions: a quick run's figures on a shared machine
mean nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_quick_oauth_bench_reports_both_faces(tmp_path: Path) -> None:
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
    for face in ("grpc_delegate", "http_token_exchange"):
        for threads in (1, 8):
            row = figures[f"{face}@{threads}"]
            assert row["failures"] == 0
            assert row["rps"] > 0
            assert set(row) == {"rps", "p50_ms", "p99_ms", "failures"}
    assert "HTTP token exchange" in (tmp_path / "oauth.md").read_text()
