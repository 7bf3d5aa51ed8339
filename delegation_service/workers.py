"""``serve --workers N``: N server processes on one port, so one host uses all its cores.

gRPC's Python server runs one process's RPCs under one GIL; several processes sharing the port through
SO_REUSEPORT let the kernel spread connections over them. Each worker builds its own application (its
own Redis connection pool, keys and caches) from the same configuration. The supervisor forwards
SIGTERM/SIGINT to every worker, waits for their graceful drain, and exits with the first failure; if a
worker dies on its own the supervisor stops the others, so an orchestrator sees one failed process
rather than a silently shrunken one.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from multiprocessing.process import BaseProcess

log = logging.getLogger(__name__)


def supervise(count: int, target: Callable[[int], int], grace_seconds: float) -> int:
    """Run ``target(worker_index)`` in ``count`` spawned processes until a signal or a worker's exit."""
    context = multiprocessing.get_context("spawn")  # no grpc state may cross a fork
    workers: list[BaseProcess] = [
        context.Process(target=_worker_main, args=(target, index), name=f"worker-{index}", daemon=False)
        for index in range(count)
    ]
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    for worker in workers:
        worker.start()
    log.info("workers started", extra={"event": "workers", "count": count, "pids": [w.pid for w in workers]})
    while not stopping.wait(0.5):
        if any(w.exitcode is not None for w in workers):
            log.error("a worker exited; stopping the others", extra={"event": "workers"})
            break
    for worker in workers:
        if worker.exitcode is None and worker.pid is not None:
            _signal(worker.pid, signal.SIGTERM)
    for worker in workers:
        worker.join(timeout=grace_seconds + 5)
        if worker.exitcode is None:
            worker.kill()
            worker.join()
    codes = [w.exitcode or 0 for w in workers]
    return next((code for code in codes if code != 0), 0 if stopping.is_set() else 1)


def _worker_main(target: Callable[[int], int], index: int) -> None:
    raise SystemExit(target(index))


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
        os.kill(pid, sig)
