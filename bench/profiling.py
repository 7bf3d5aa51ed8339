"""Where a server's Python time goes: py-spy's collapsed stacks, summed by component and by leaf frame.

py-spy samples only Python threads; gRPC's C-core threads (polling, HTTP/2) show in the process's CPU
time but not here. Only the thread holding the GIL is sampled (``--gil``), so percentages are shares
of the process's Python CPU time, the resource a one-process server runs out of first.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# (label, substrings any of which marks a frame as part of the component). Inclusive: a sample counts
# for every component one of its frames belongs to.
COMPONENTS: Sequence[tuple[str, tuple[str, ...]]] = (
    (
        "servicer (whole call)",
        (
            "Delegate (delegation_service/transport/servicer.py",
            "Introspect (delegation_service/transport/servicer.py",
            "Revoke (delegation_service/transport/servicer.py",
            "RevokeChain (delegation_service/transport/servicer.py",
        ),
    ),
    ("JwtVerifier.verify", ("verify (delegation_service/adapters/jwt_codec.py",)),
    (
        "  of which our JSON/base64 segment parsing",
        ("_decode_segment (delegation_service/adapters/jwt_codec.py",),
    ),
    ("JwtSigner.sign", ("sign (delegation_service/adapters/jwt_codec.py",)),
    ("cryptography (sign/verify primitives)", ("cryptography/",)),
    ("registry.snapshot (1 EVALSHA)", ("snapshot (delegation_service/adapters/redis/registry.py",)),
    ("registry.mint (1 EVALSHA)", ("mint (delegation_service/adapters/redis/registry.py",)),
    ("registry.chain", ("chain (delegation_service/adapters/redis/registry.py",)),
    (
        "registry revoke (mark + publish)",
        (
            "revoke_token (delegation_service/adapters/redis/registry.py",
            "revoke_chain (delegation_service/adapters/redis/registry.py",
            "revoke_known_chain (delegation_service/adapters/redis/registry.py",
        ),
    ),
    ("redis-py (all)", ("redis/",)),
    ("policy.decide", ("decide (delegation_service/domain/policy.py",)),
    ("logging (audit lines)", ("logging/", "delegation_service/logs.py")),
    ("protobuf build/serialize", ("google/protobuf",)),
    ("gRPC Python layer (grpc/_server.py etc.)", ("grpc/",)),
)


# Exclusive attribution: each sample goes to the innermost frame that names one of these components,
# so the shares add up to 100% (the rest, no frame of ours or of a library named here, is gRPC's Python
# layer: request dispatch, the thread pool, status and completion handling).
OWNERS: Sequence[tuple[str, tuple[str, ...]]] = (
    ("verify (JwtVerifier, with cryptography under it)", ("JwtVerifier.",)),
    ("verified-token cache lookup", ("CachingVerifier.",)),
    ("sign (JwtSigner, with cryptography under it)", ("JwtSigner.",)),
    ("Redis (registry + redis-py)", ("RedisRegistry.", "redis/")),
    ("policy", ("DelegationPolicy.", "delegation_service/domain/scopes.py")),
    (
        "logging (audit + access log lines)",
        ("logging/", "delegation_service/logs.py", "delegation_service/audit.py"),
    ),
    (
        "metrics (interceptor + prometheus_client)",
        ("delegation_service/transport/metrics.py", "prometheus_client/"),
    ),
    ("servicer (proto in/out)", ("delegation_service/transport/servicer.py",)),
    ("other use-case code", ("delegation_service/service.py", "delegation_service/domain/")),
    (
        "error/auth interceptor",
        ("delegation_service/transport/interceptors.py", "delegation_service/transport/auth"),
    ),
)
GRPC_LAYER = "gRPC Python layer and thread pool (the rest)"


def owner(frames: Sequence[str]) -> str:
    """The component a sample's time belongs to: the innermost frame that names one."""
    for frame in reversed(frames):
        for label, markers in OWNERS:
            if any(marker in frame for marker in markers):
                return label
    return GRPC_LAYER


def py_spy() -> str | None:
    """The py-spy executable beside this Python, or on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def start_recording(
    pids: Sequence[int], duration: float, output: Path, rate: int = 250
) -> subprocess.Popen[bytes]:
    """py-spy record (raw collapsed stacks) of one process for ``duration`` seconds, non-blocking."""
    executable = py_spy()
    if executable is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    command = [
        executable,
        "record",
        "--pid",
        str(pids[0]),
        "--rate",
        str(rate),
        "--duration",
        str(max(1, round(duration))),
        "--format",
        "raw",
        "--output",
        str(output),
        "--nonblocking",
        # Only the thread holding the GIL: where the process's Python CPU goes, not where its threads
        # wait (a sync server's threads mostly wait on Redis replies or for work).
        "--gil",
        "--function",
    ]
    return subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def summarize(raw: Path, top: int = 15) -> dict[str, Any]:
    """Component shares (inclusive) and the heaviest leaf frames of a collapsed-stack file."""
    total = 0
    components: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    owners: Counter[str] = Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        leaves[frames[-1]] += count
        owners[owner(frames)] += count
        for label, markers in COMPONENTS:
            if any(marker in frame for frame in frames for marker in markers):
                components[label] += count
    share = {label: round(100 * components[label] / total, 1) if total else 0.0 for label, _ in COMPONENTS}
    return {
        "samples": total,
        "owner_percent": {label: round(100 * n / total, 1) for label, n in owners.most_common()}
        if total
        else {},
        "component_percent": share,
        "top_leaf_percent": {frame: round(100 * n / total, 1) for frame, n in leaves.most_common(top)},
    }


def markdown(profiles: dict[str, dict[str, Any]]) -> str:
    """The summaries as Markdown tables."""
    lines = ["# Where the service's Python CPU goes (py-spy --gil, % of samples holding the GIL)", ""]
    for name, summary in profiles.items():
        lines += [
            f"## {name} ({summary['samples']} samples)",
            "",
            "| component (inclusive) | % |",
            "|---|--:|",
        ]
        lines += [f"| {label} | {value} |" for label, value in summary["component_percent"].items()]
        lines += ["", "| owner (innermost frame; adds up to 100%) | % |", "|---|--:|"]
        lines += [f"| {label} | {value} |" for label, value in summary["owner_percent"].items()]
        lines += ["", "| leaf frame (self) | % |", "|---|--:|"]
        lines += [f"| `{frame}` | {value} |" for frame, value in summary["top_leaf_percent"].items()]
        lines.append("")
    return "\n".join(lines)
