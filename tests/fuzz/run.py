"""Time-bounded fuzzing of the targets in :mod:`tests.fuzz.targets`, libFuzzer style.

Each target is a Hypothesis test; ``fuzz_one_input`` turns a random byte buffer into its arguments and
runs it once. The loop gives every target an equal share of ``--seconds``, counts executions, and
stops at the first failure (Hypothesis saves the failing example in its database, so the next
``pytest tests/fuzz`` replays it). The count is printed per target and in total.

    python -m tests.fuzz.run --seconds 60
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from tests.fuzz import targets

TARGETS: dict[str, Callable[..., Any]] = {
    "token-preparser": targets.test_token_preparser_only_ever_refuses,
    "scope-grammar": targets.test_scope_grammar_only_ever_refuses,
    "grpc-surface": targets.test_grpc_surface_never_answers_internal_or_unknown,
    "raw-bytes": targets.test_raw_bytes_never_answer_internal_or_unknown,
}
BUFFER_BYTES = 2048


def fuzz(name: str, target: Callable[..., Any], seconds: float) -> tuple[int, int]:
    """Run ``target`` on random buffers for ``seconds``; (executions, valid ones). Raises on a failure."""
    fuzz_one_input = target.hypothesis.fuzz_one_input  # type: ignore[attr-defined]
    deadline = time.monotonic() + seconds
    executions = valid = 0
    while time.monotonic() < deadline:
        if fuzz_one_input(os.urandom(BUFFER_BYTES)) is not None:
            valid += 1
        executions += 1
    return executions, valid


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="total time budget (default 60)")
    parser.add_argument("--target", choices=sorted(TARGETS), action="append", help="only these targets")
    args = parser.parse_args(argv)
    chosen = args.target or list(TARGETS)
    share = max(args.seconds, 0.1) / len(chosen)
    total = 0
    for name in chosen:
        try:
            executions, valid = fuzz(name, TARGETS[name], share)
        except Exception:
            traceback.print_exc()
            print(f"fuzz: {name}: FAILED (the example is saved; `pytest tests/fuzz` replays it)")
            return 1
        total += executions
        print(f"fuzz: {name}: {executions} executions ({valid} complete inputs) in {share:.0f} s, no failure")
    print(f"fuzz: {total} executions in total, no INTERNAL or UNKNOWN status, no unexpected exception")
    return 0


if __name__ == "__main__":
    sys.exit(main())
