"""A short run of ``bench/jwks.py``: it runs and reports every figure. No timing assertions; the one
count it checks (one JWKS fetch per storm) is the single-flight rule, not a speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_jwks_bench_reports_its_figures() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.jwks", "--rounds", "1", "--calls", "50", "--rotations", "2"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(result.stdout)
    assert report["storm"]["fetches_per_round"] == [1]
    assert report["storm"]["failed_calls"] == 0
    for figure in ("rotation_to_acceptance_ms", "grpc_rotation_to_acceptance_ms"):
        assert set(report[figure]) == {"median", "p90", "max"}
