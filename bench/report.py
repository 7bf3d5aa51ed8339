"""Medians over repeated runs, ratios to the floor, and the JSON, Markdown and PNG outputs."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

METRICS = (
    "rps",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "mean_ms",
    "server_cpu_ms_per_call",
    "redis_cpu_ms_per_call",
    "loadgen_cpu_ms_per_call",
)

TARGET_LABELS = {
    "service": "service",
    "service-2p": "service, 2 processes",
    "service-streams": "service with open streams",
    "floor": "floor (minimal)",
    "floor-2p": "floor (minimal), 2 processes",
    "echo": "floor (bare echo)",
    "floor-aio": "floor (minimal) on grpc.aio + uvloop",
    "echo-aio": "bare echo on grpc.aio + uvloop",
    "peer": "oidc-provider (Node)",
    "service-http": "service, OAuth HTTP (threads)",
    "service-granian": "service, OAuth HTTP (granian)",
}
RPC_LABELS = {
    "Delegate": "Delegate (fresh parent)",
    "DelegateWarm": "Delegate (warm parent)",
    "Introspect": "Introspect (fresh token)",
    "IntrospectWarm": "Introspect (warm token)",
    "Revoke": "Revoke",
    "RevokeChain": "RevokeChain",
    "Echo": "Echo",
    "Grant": "token grant (client_credentials)",
    "TokenExchange": "token exchange (fresh parent)",
    "TokenExchangeWarm": "token exchange (warm parent)",
}

# Each service scenario and the floor it is compared with: same crypto and one Redis round trip (minimal
# Delegate / Introspect); Revoke's floor is "verify + one round trip" (the minimal Introspect);
# RevokeChain does no cryptography, so its floor is the bare echo.
FLOOR_OF: Mapping[tuple[str, str], tuple[str, str]] = {
    ("service", "Delegate"): ("floor", "Delegate"),
    ("service", "DelegateWarm"): ("floor", "Delegate"),
    ("service", "Introspect"): ("floor", "Introspect"),
    ("service", "IntrospectWarm"): ("floor", "Introspect"),
    ("service", "Revoke"): ("floor", "Introspect"),
    ("service", "RevokeChain"): ("echo", "Echo"),
    ("service-2p", "Delegate"): ("floor-2p", "Delegate"),
    ("service-2p", "Introspect"): ("floor-2p", "Introspect"),
}


FLOOR_TARGETS = frozenset(target for target, _ in FLOOR_OF.values())
GRPC_OF_HTTP = {"TokenExchange": "Delegate", "TokenExchangeWarm": "DelegateWarm"}
"""The gRPC call each OAuth-face call is compared with: the same use case, the same parent freshness."""


def key_of(target: str, rpc: str, concurrency: int) -> str:
    """A scenario's id, e.g. ``service/Delegate/c64``."""
    return f"{target}/{rpc}/c{concurrency}"


def aggregate(runs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Medians of every metric over the runs of one scenario; errors and calls summed."""
    runs = list(runs)
    if not runs:
        return {}
    median: dict[str, Any] = {
        m: statistics.median(float(r[m]) for r in runs) for m in METRICS if all(m in r for r in runs)
    }
    median["runs"] = len(runs)
    median["calls"] = sum(int(r["calls"]) for r in runs)
    median["errors"] = sum(int(r["errors"]) for r in runs)
    commands: dict[str, list[float]] = {}
    for run in runs:
        for name, value in run.get("redis_commands_per_call", {}).items():
            commands.setdefault(name, []).append(float(value))
    median["redis_commands_per_call"] = {n: statistics.median(v) for n, v in sorted(commands.items())}
    return median


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


def paired_ratios(
    mine: Iterable[Mapping[str, Any]], theirs: Iterable[Mapping[str, Any]], metric: str = "rps"
) -> dict[str, float | int | None]:
    """``metric`` of each repetition over the same repetition's baseline: the median of those ratios,
    their spread (min, max) and how many pairs. Phases of one repetition ran minutes apart at most, so a
    pair shares the machine's load of the moment, which medians of separate runs do not."""
    by_rep = {int(r["rep"]): float(r[metric]) for r in theirs if "rep" in r and r.get(metric)}
    ratios = sorted(
        float(r[metric]) / by_rep[int(r["rep"])] for r in mine if "rep" in r and int(r["rep"]) in by_rep
    )
    if not ratios:
        return {"median": None, "min": None, "max": None, "pairs": 0}
    return {
        "median": round(statistics.median(ratios), 3),
        "min": round(ratios[0], 3),
        "max": round(ratios[-1], 3),
        "pairs": len(ratios),
    }


def comparisons(scenarios: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each service scenario against its floor, the bare echo and the floor's best server model."""
    rows = []
    for key, scenario in scenarios.items():
        target, rpc, concurrency = scenario["target"], scenario["rpc"], scenario["concurrency"]
        floor = FLOOR_OF.get((target, rpc))
        if floor is None:
            continue
        mine = scenario["median"]
        floor_scenario = scenarios.get(key_of(floor[0], floor[1], concurrency), {})
        theirs = floor_scenario.get("median", {})
        paired = paired_ratios(scenario.get("runs", []), floor_scenario.get("runs", []))
        echo = scenarios.get(key_of("echo", "Echo", concurrency), {}).get("median", {})
        floor_rpc = floor[1]
        best_floor = max(
            (
                scenarios[k]["median"].get("rps", 0.0)
                for k in (key_of("floor", floor_rpc, concurrency), key_of("floor-2p", floor_rpc, concurrency))
                if k in scenarios and scenarios[k].get("median")
            ),
            default=None,
        )
        rows.append(
            {
                "scenario": key,
                "floor": key_of(floor[0], floor[1], concurrency),
                "rps": mine.get("rps"),
                "floor_rps": theirs.get("rps"),
                "rps_ratio": _ratio(mine.get("rps"), theirs.get("rps")),
                "rps_ratio_paired": paired["median"],
                "rps_ratio_paired_spread": [paired["min"], paired["max"]],
                "pairs": paired["pairs"],
                "rps_ratio_vs_best_floor_model": _ratio(mine.get("rps"), best_floor)
                if floor[0] != "echo"
                else None,
                "p99_ms": mine.get("p99_ms"),
                "floor_p99_ms": theirs.get("p99_ms"),
                "p99_ratio": _ratio(mine.get("p99_ms"), theirs.get("p99_ms")),
                "p50_ratio": _ratio(mine.get("p50_ms"), theirs.get("p50_ms")),
                "cpu_ratio": _ratio(mine.get("server_cpu_ms_per_call"), theirs.get("server_cpu_ms_per_call")),
                "rps_ratio_vs_echo": _ratio(mine.get("rps"), echo.get("rps")),
            }
        )
    return rows


def scaling(scenarios: Mapping[str, Mapping[str, Any]]) -> dict[str, float | None]:
    """Two processes against one on the same port (``serve --workers 2`` as it would run)."""
    result: dict[str, float | None] = {}
    for rpc in ("Delegate", "Introspect"):
        for one, two in (("service", "service-2p"), ("floor", "floor-2p")):
            a = scenarios.get(key_of(one, rpc, 64), {}).get("median", {}).get("rps")
            b = scenarios.get(key_of(two, rpc, 64), {}).get("median", {}).get("rps")
            result[f"{one}/{rpc}/c64: 2 processes / 1"] = _ratio(b, a)
    return result


def streams_effect(scenarios: Mapping[str, Mapping[str, Any]], open_streams: int) -> list[dict[str, Any]]:
    """Delegate on a server holding ``open_streams`` idle followers against the same server with none,
    per concurrency (SPEC §5: a thousand followers leave Delegate as fast as with none)."""
    rows = []
    for key, scenario in scenarios.items():
        if scenario["target"] != "service-streams":
            continue
        mine = scenario["median"]
        without = scenarios.get(key_of("service", scenario["rpc"], scenario["concurrency"]), {})
        theirs = without.get("median", {})
        paired = paired_ratios(scenario.get("runs", []), without.get("runs", []))
        rows.append(
            {
                "scenario": key,
                "open_streams": open_streams,
                "rps_ratio_paired": paired["median"],
                "rps_ratio_paired_spread": [paired["min"], paired["max"]],
                "pairs": paired["pairs"],
                "concurrency": scenario["concurrency"],
                "rps": mine.get("rps"),
                "rps_without": theirs.get("rps"),
                "rps_ratio": _ratio(mine.get("rps"), theirs.get("rps")),
                "p50_ms": mine.get("p50_ms"),
                "p50_ratio": _ratio(mine.get("p50_ms"), theirs.get("p50_ms")),
                "p99_ms": mine.get("p99_ms"),
                "p99_ratio": _ratio(mine.get("p99_ms"), theirs.get("p99_ms")),
                "errors": mine.get("errors"),
            }
        )
    return rows


PEER_FACES = (
    ("service", "Delegate"),
    ("service", "DelegateWarm"),
    ("floor", "Delegate"),
    ("service-http", "TokenExchange"),
    ("service-http", "TokenExchangeWarm"),
    ("service-granian", "TokenExchange"),
    ("service-granian", "TokenExchangeWarm"),
)
"""Our calls that a caller could put beside the peer's grant: (target, rpc)."""


def peer_comparison(scenarios: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Delegate (fresh and warm parent) and the floor's Delegate against the peer's token grant, per
    concurrency: rps, and grants per core (the inverse of server CPU per call) as ratios to the peer."""
    rows = []
    for key, scenario in scenarios.items():
        if scenario["target"] != "peer":
            continue
        concurrency = scenario["concurrency"]
        theirs = scenario["median"]
        for target, rpc in PEER_FACES:
            ours = scenarios.get(key_of(target, rpc, concurrency), {})
            mine = ours.get("median", {})
            if not mine:
                continue
            paired = paired_ratios(ours.get("runs", []), scenario.get("runs", []))
            # Per core, repetition by repetition: the peer's CPU per call over ours.
            per_core = paired_ratios(scenario.get("runs", []), ours.get("runs", []), "server_cpu_ms_per_call")
            rows.append(
                {
                    "scenario": key_of(target, rpc, concurrency),
                    "peer": key,
                    "concurrency": concurrency,
                    "rps": mine.get("rps"),
                    "peer_rps": theirs.get("rps"),
                    "rps_ratio": _ratio(mine.get("rps"), theirs.get("rps")),
                    "rps_ratio_paired": paired["median"],
                    "rps_ratio_paired_spread": [paired["min"], paired["max"]],
                    "pairs": paired["pairs"],
                    "cpu_ms_per_call": mine.get("server_cpu_ms_per_call"),
                    "peer_cpu_ms_per_call": theirs.get("server_cpu_ms_per_call"),
                    # Calls per CPU-second, ours / theirs: the same as their CPU per call over ours.
                    "per_core_ratio": _ratio(
                        theirs.get("server_cpu_ms_per_call"), mine.get("server_cpu_ms_per_call")
                    ),
                    "per_core_ratio_paired": per_core["median"],
                    "per_core_ratio_paired_spread": [per_core["min"], per_core["max"]],
                    "p50_ms": mine.get("p50_ms"),
                    "peer_p50_ms": theirs.get("p50_ms"),
                    "p99_ms": mine.get("p99_ms"),
                    "peer_p99_ms": theirs.get("p99_ms"),
                    "loadgen_cpu_ms_per_call": mine.get("loadgen_cpu_ms_per_call"),
                    "peer_loadgen_cpu_ms_per_call": theirs.get("loadgen_cpu_ms_per_call"),
                }
            )
    return rows


SERVER_MODELS = (("echo", "echo-aio", "Echo"), ("floor", "floor-aio", "Delegate"))
"""The same work on the sync server (a thread pool) and on grpc.aio: (sync target, aio target, rpc)."""


def server_models(scenarios: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The asyncio server model against the sync one, for the bare echo and the floor's Delegate."""
    rows = []
    for sync_target, aio_target, rpc in SERVER_MODELS:
        for key, scenario in scenarios.items():
            if scenario["target"] != aio_target:
                continue
            concurrency = scenario["concurrency"]
            aio = scenario["median"]
            sync = scenarios.get(key_of(sync_target, rpc, concurrency), {}).get("median", {})
            rows.append(
                {
                    "scenario": key,
                    "sync": key_of(sync_target, rpc, concurrency),
                    "concurrency": concurrency,
                    "rps": aio.get("rps"),
                    "sync_rps": sync.get("rps"),
                    "rps_ratio": _ratio(aio.get("rps"), sync.get("rps")),
                    "cpu_ms_per_call": aio.get("server_cpu_ms_per_call"),
                    "sync_cpu_ms_per_call": sync.get("server_cpu_ms_per_call"),
                    "cpu_ratio": _ratio(
                        aio.get("server_cpu_ms_per_call"), sync.get("server_cpu_ms_per_call")
                    ),
                    "p50_ratio": _ratio(aio.get("p50_ms"), sync.get("p50_ms")),
                    "p99_ratio": _ratio(aio.get("p99_ms"), sync.get("p99_ms")),
                }
            )
    return rows


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Indented JSON, keys in insertion order."""
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def markdown(data: Mapping[str, Any]) -> str:
    """The results as Markdown: service vs floor, the floors, scale costs, round trips."""
    scenarios: Mapping[str, Mapping[str, Any]] = data["scenarios"]
    compared = {row["scenario"]: row for row in data["comparisons"]}
    meta = data["meta"]
    lines = [
        "# delegation-service benchmark",
        "",
        f"{meta['started']} · {meta['machine']} · server model: {meta['server_model']} · "
        f"median of {meta['reps']} interleaved runs of {meta['duration_s']} s (warm-up {meta['warmup_s']} s)"
        f" · load generator: {meta['load_generator']}",
        "",
        "Ratios: rps xfloor ≥ 1 is as fast as the floor; p99 xfloor and CPU xfloor ≤ 1 are as cheap. "
        "Fresh: every call presents a token never seen before (no cache can help); warm: the same parent "
        "for the whole run (Delegate), or a pool of 1,500 children presented again and again (Introspect).",
        "",
        "## Service vs floor",
        "",
        "| scenario | conc | rps | p50 ms | p90 ms | p99 ms | server CPU ms/call | errors | floor | "
        "floor rps | rps xfloor | paired rps xfloor (min-max) | floor p99 ms | p99 xfloor | CPU xfloor |",
        "|---|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|",
    ]
    for key, scenario in scenarios.items():
        if scenario["target"] not in ("service", "service-2p"):
            continue
        m = scenario["median"]
        c = compared.get(key, {})
        floor_key = c.get("floor", "")
        floor_label = (
            f"{TARGET_LABELS[floor_key.split('/')[0]]} {floor_key.split('/')[1]}" if floor_key else "-"
        )
        lines.append(
            f"| {TARGET_LABELS[scenario['target']]} · {RPC_LABELS[scenario['rpc']]} "
            f"| {scenario['concurrency']} "
            f"| {_fmt(m.get('rps'), 0)} | {_fmt(m.get('p50_ms'))} | {_fmt(m.get('p90_ms'))} "
            f"| {_fmt(m.get('p99_ms'))} | {_fmt(m.get('server_cpu_ms_per_call'), 3)} "
            f"| {m.get('errors', '-')} "
            f"| {floor_label} | {_fmt(c.get('floor_rps'), 0)} | {_fmt(c.get('rps_ratio'))} "
            f"| {_paired_text(c)} "
            f"| {_fmt(c.get('floor_p99_ms'))} | {_fmt(c.get('p99_ratio'))} | {_fmt(c.get('cpu_ratio'))} |"
        )
    lines += [
        "",
        "## The floors",
        "",
        "| floor | conc | rps | p50 ms | p90 ms | p99 ms | server CPU ms/call | errors |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for scenario in scenarios.values():
        if scenario["target"] not in FLOOR_TARGETS:
            continue
        m = scenario["median"]
        lines.append(
            f"| {TARGET_LABELS[scenario['target']]} · {RPC_LABELS[scenario['rpc']]} "
            f"| {scenario['concurrency']} "
            f"| {_fmt(m.get('rps'), 0)} | {_fmt(m.get('p50_ms'))} | {_fmt(m.get('p90_ms'))} "
            f"| {_fmt(m.get('p99_ms'))} | {_fmt(m.get('server_cpu_ms_per_call'), 3)} "
            f"| {m.get('errors', '-')} |"
        )
    lines += _oauth_face_lines(data)
    lines += ["", "## Two processes on one port (SO_REUSEPORT) vs one", ""]
    for name, value in data["process_scaling"].items():
        lines.append(f"- {name}: {_fmt(value)}x")
    streams = data.get("open_streams") or []
    if streams:
        lines += [
            "",
            f"## Delegate with {streams[0]['open_streams']:,} open WatchRevocations streams vs none",
            "",
            "Same service, same run, interleaved; ratio = with streams / without (1.00: no effect).",
            "",
            "| conc | rps | rps without | rps ratio | paired (min-max) | p50 ms | p50 ratio | p99 ms "
            "| p99 ratio | errors |",
            "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for row in streams:
            lines.append(
                f"| {row['concurrency']} | {_fmt(row['rps'], 0)} | {_fmt(row['rps_without'], 0)} "
                f"| {_fmt(row['rps_ratio'])} | {_paired_text(row)} | {_fmt(row['p50_ms'])} "
                f"| {_fmt(row['p50_ratio'])} "
                f"| {_fmt(row['p99_ms'])} | {_fmt(row['p99_ratio'])} | {row['errors']} |"
            )
    lines += _peer_lines(data)
    lines += [
        "",
        "## Server model: grpc.aio + uvloop vs the sync thread pool (same work)",
        "",
        "Ratio = aio / sync: rps above 1 and CPU per call below 1 favour asyncio.",
        "",
        "| work | conc | aio rps | sync rps | rps ratio | aio CPU ms/call | sync CPU ms/call | CPU ratio "
        "| p50 ratio | p99 ratio |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in data.get("server_models") or []:
        target, rpc, _ = row["scenario"].split("/")
        lines.append(
            f"| {RPC_LABELS[rpc]} | {row['concurrency']} | {_fmt(row['rps'], 0)} "
            f"| {_fmt(row['sync_rps'], 0)} "
            f"| {_fmt(row['rps_ratio'])} | {_fmt(row['cpu_ms_per_call'], 3)} "
            f"| {_fmt(row['sync_cpu_ms_per_call'], 3)} | {_fmt(row['cpu_ratio'])} "
            f"| {_fmt(row['p50_ratio'])} | {_fmt(row['p99_ratio'])} |"
        )
    chain = data["revoke_chain_scale"]
    memory = data["memory"]
    lines += [
        "",
        "## Cost of scale",
        "",
        "| measure | value |",
        "|---|--:|",
        f"| RevokeChain, chain of 1 child (median ms) | {_fmt(chain.get('chain_1_ms'))} |",
        f"| RevokeChain, chain of {chain.get('big_chain_children', 0):,} children (median ms) "
        f"| {_fmt(chain.get('chain_big_ms'))} |",
        f"| ratio (big / 1) | {_fmt(chain.get('ratio'))} |",
        "| RevokeChain dry run on the big chain: reported blast radius "
        f"| {chain.get('big_dry_run_count', '-')} |",
        f"| RevokeChain errors | {chain.get('errors', '-')} |",
        f"| Redis bytes per child, chain of {memory.get('big_chain_children', 0):,} (INFO delta) "
        f"| {_fmt(memory.get('bytes_per_child_in_big_chain'), 0)} |",
        f"| Redis bytes per token, {memory.get('small_chains', 0):,} chains of root + 1 child (INFO delta) "
        f"| {_fmt(memory.get('bytes_per_token_in_1_child_chains'), 0)} |",
        "| MEMORY USAGE of a root + 1 child chain (its one hash; mean) "
        f"| {_fmt(memory.get('memory_usage_1_child_chain'), 0)} |",
        "| MEMORY USAGE of the big chain's records hash, per child "
        f"| {_fmt(memory.get('memory_usage_records_per_child_big_chain'), 0)} |",
        "| MEMORY USAGE of the big chain's expiry index, per child "
        f"| {_fmt(memory.get('memory_usage_index_per_child_big_chain'), 0)} |",
        f"| Keys without a TTL after the run (of {data['keys_without_ttl']['scanned']:,} scanned) "
        f"| {data['keys_without_ttl']['without_ttl']:,} |",
        *(
            f"| &nbsp;&nbsp;shape `{shape}` | {count:,} |"
            for shape, count in data["keys_without_ttl"]["by_shape"].items()
        ),
        "",
        "## Redis round trips per call",
        "",
        "Round trips: commands sent by the server process (MONITOR census, script-internal commands and "
        "health "
        "PINGs left out). Commands: `INFO commandstats` deltas per call during the measured runs, "
        "script-internal commands included.",
        "",
        "| scenario | round trips / call | client commands / call | all Redis commands / call (c64 runs) |",
        "|---|--:|---|---|",
    ]
    for key, census in data["round_trips"].items():
        target, rpc = key.split("/")
        per_call = (
            scenarios.get(key_of(target, rpc, 64), {}).get("median", {}).get("redis_commands_per_call", {})
        )
        lines.append(
            f"| {TARGET_LABELS[target]} · {RPC_LABELS[rpc]} | {_fmt(census['per_call'])} "
            f"| {', '.join(f'{n} {v:g}' for n, v in census['commands'].items()) or '-'} "
            f"| {', '.join(f'{n} {v:g}' for n, v in per_call.items()) or '-'} |"
        )
    lines += [
        "",
        f"Verified-token cache in the service: {_cache_text(meta)}. "
        f"Measured: commit {meta['git']['commit']}"
        f"{' with local changes to delegation_service/' if meta['git']['service_code_modified'] else ''}. "
        f"Total errors: {data['errors_total']}."
        + (" INCOMPLETE: " + meta["incomplete"] if meta.get("incomplete") else ""),
        "",
    ]
    return "\n".join(lines)


def oauth_faces(scenarios: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each token exchange over HTTP beside gRPC ``Delegate`` with a parent as fresh (rps and CPU paired
    per repetition)."""
    rows = []
    for key, scenario in scenarios.items():
        grpc_rpc = GRPC_OF_HTTP.get(scenario["rpc"])
        if grpc_rpc is None:
            continue
        grpc = scenarios.get(key_of("service", grpc_rpc, scenario["concurrency"]), {})
        runs, grpc_runs = scenario.get("runs", []), grpc.get("runs", [])
        rps = paired_ratios(runs, grpc_runs)
        cpu = paired_ratios(runs, grpc_runs, "server_cpu_ms_per_call")
        rows.append(
            {
                "scenario": key,
                "grpc": key_of("service", grpc_rpc, scenario["concurrency"]),
                "concurrency": scenario["concurrency"],
                **{name: scenario["median"].get(name) for name in ("rps", "p50_ms", "p99_ms", "errors")},
                "cpu_ms_per_call": scenario["median"].get("server_cpu_ms_per_call"),
                "rps_ratio_paired": rps["median"],
                "rps_ratio_paired_spread": [rps["min"], rps["max"]],
                "cpu_ratio_paired": cpu["median"],
                "cpu_ratio_paired_spread": [cpu["min"], cpu["max"]],
                "pairs": rps["pairs"],
            }
        )
    return rows


def _oauth_face_lines(data: Mapping[str, Any]) -> list[str]:
    rows = data.get("oauth_faces") or []
    if not rows:
        return []
    lines = [
        "",
        "## The OAuth face: token exchange over HTTP beside gRPC Delegate",
        "",
        "The same use case through the OAuth port (RFC 8693, a keep-alive connection per call in flight) "
        "and through gRPC, parents as fresh; ratios paired per repetition (HTTP / gRPC).",
        "",
        "| face | conc | rps | p50 / p99 ms | CPU ms/call | errors | rps x gRPC (min-max) "
        "| CPU x gRPC (min-max) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        target, rpc, _ = row["scenario"].split("/")
        lines.append(
            f"| {TARGET_LABELS[target]} · {RPC_LABELS[rpc]} | {row['concurrency']} | {_fmt(row['rps'], 0)} "
            f"| {_fmt(row['p50_ms'])} / {_fmt(row['p99_ms'])} | {_fmt(row['cpu_ms_per_call'], 3)} "
            f"| {row['errors']} | {_paired_text(row)} | {_paired_text(row, 'cpu_ratio_paired')} |"
        )
    return lines


def _paired_text(row: Mapping[str, Any], name: str = "rps_ratio_paired") -> str:
    low, high = row.get(f"{name}_spread") or (None, None)
    if row.get(name) is None:
        return "-"
    return f"{_fmt(row[name])} ({_fmt(low)}-{_fmt(high)}, n={row.get('pairs')})"


def _peer_lines(data: Mapping[str, Any]) -> list[str]:
    peer = data["meta"].get("peer") or {}
    lines = [
        "",
        f"## Against a real peer: {peer.get('name', 'oidc-provider')} {peer.get('version') or ''}",
        "",
    ]
    if peer.get("skipped"):
        return [*lines, f"Skipped: {peer['skipped']}."]
    lines += [
        f"The peer's call: {peer.get('grant', '-')}; it verifies no parent, stores nothing and logs "
        "nothing. Delegate, and the token exchange (the same use case over HTTP), also verify the parent, "
        "check the policy, record the child in Redis and write an audit line. Per core = calls per server "
        "CPU-second, ours / the peer's, each repetition against the peer's of the same repetition.",
        "",
        "| ours | conc | rps | peer rps | rps x peer | paired (min-max) | CPU ms/call | peer CPU ms/call "
        "| per core x peer, paired (min-max) | p50 / p99 ms | peer p50 / p99 ms "
        "| load-gen CPU ms/call (ours / peer) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in data.get("peer") or []:
        target, rpc, _ = row["scenario"].split("/")
        lines.append(
            f"| {TARGET_LABELS[target]} · {RPC_LABELS[rpc]} | {row['concurrency']} | {_fmt(row['rps'], 0)} "
            f"| {_fmt(row['peer_rps'], 0)} | {_fmt(row['rps_ratio'])} | {_paired_text(row)} "
            f"| {_fmt(row['cpu_ms_per_call'], 3)} "
            f"| {_fmt(row['peer_cpu_ms_per_call'], 3)} | {_paired_text(row, 'per_core_ratio_paired')} "
            f"| {_fmt(row['p50_ms'])} / {_fmt(row['p99_ms'])} "
            f"| {_fmt(row['peer_p50_ms'])} / {_fmt(row['peer_p99_ms'])} "
            f"| {_fmt(row['loadgen_cpu_ms_per_call'], 3)} / {_fmt(row['peer_loadgen_cpu_ms_per_call'], 3)} |"
        )
    return lines


def _cache_text(meta: Mapping[str, Any]) -> str:
    setting = meta.get("verified_token_cache_setting")
    if setting:
        return f"yes (`{setting['setting']}`, default {setting['default']:,})"
    return "detected" if meta.get("verified_token_cache") else "none yet"


def chart(data: Mapping[str, Any], path: Path) -> None:
    """Throughput and p99 of each service scenario beside its floor (and the bare echo)."""
    scenarios: Mapping[str, Mapping[str, Any]] = data["scenarios"]
    pairs = [
        ("service", "Delegate", "Delegate\nfresh parent"),
        ("service", "DelegateWarm", "Delegate\nwarm parent"),
        ("service", "Introspect", "Introspect\nfresh token"),
        ("service", "IntrospectWarm", "Introspect\nwarm token"),
        ("service", "Revoke", "Revoke"),
        ("service", "RevokeChain", "RevokeChain\n(floor: echo)"),
        ("service-2p", "Delegate", "Delegate\n2 processes"),
        ("service-2p", "Introspect", "Introspect\n2 processes"),
    ]
    panels = [
        ("rps", 64, "Throughput at 64 in flight (rps, higher is better)"),
        ("rps", 1, "Throughput at 1 in flight (rps)"),
        ("p99_ms", 1, "p99 latency at 1 in flight (ms, lower is better)"),
        ("p99_ms", 64, "p99 latency at 64 in flight (ms)"),
    ]
    figure, axes = plt.subplots(2, 2, figsize=(15, 9))
    for axis, (metric, concurrency, title) in zip(axes.flat, panels, strict=True):
        labels, mine, theirs = [], [], []
        for target, rpc, label in pairs:
            scenario = scenarios.get(key_of(target, rpc, concurrency))
            floor = FLOOR_OF[(target, rpc)]
            floor_scenario = scenarios.get(key_of(floor[0], floor[1], concurrency))
            if not scenario or not floor_scenario:
                continue
            labels.append(label)
            mine.append(scenario["median"].get(metric, 0.0))
            theirs.append(floor_scenario["median"].get(metric, 0.0))
        positions = range(len(labels))
        width = 0.38
        bars = axis.bar([p - width / 2 for p in positions], mine, width, label="service", color="#3b6fb6")
        axis.bar([p + width / 2 for p in positions], theirs, width, label="floor", color="#e39b3a")
        for bar, a, b in zip(bars, mine, theirs, strict=True):
            if b:
                axis.annotate(
                    f"{a / b:.2f}x",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                )
        echo = scenarios.get(key_of("echo", "Echo", concurrency))
        if echo:
            value = echo["median"].get(metric, 0.0)
            axis.axhline(
                value, color="grey", linestyle="--", linewidth=1, label="bare echo (floor of RevokeChain)"
            )
            axis.annotate(
                f"bare echo {value:,.0f}" if metric == "rps" else f"bare echo {value:.2f}",
                (len(labels) - 0.5, value),
                ha="right",
                va="bottom",
                fontsize=8,
                color="grey",
            )
        axis.set_title(title, fontsize=10)
        axis.set_xticks(list(positions))
        axis.set_xticklabels(labels, fontsize=8)
        axis.legend(fontsize=8, loc="best")
        axis.grid(axis="y", alpha=0.3)
    meta = data["meta"]
    figure.suptitle(
        f"delegation-service vs its floor · {meta['machine']} · median of {meta['reps']} runs · "
        f"ratio = service / floor",
        fontsize=11,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
