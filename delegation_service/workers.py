"""``serve --workers N``: N server processes on one port, so one host uses all its cores.

gRPC's Python server runs one process's RPCs under one GIL; several processes sharing the port through
SO_REUSEPORT let the kernel spread connections over them. Each worker builds its own application (its
own Redis connection pool, keys and caches) from the same configuration. The supervisor forwards
SIGTERM/SIGINT to every worker, waits for their graceful drain, and exits with the first failure; if a
worker dies on its own the supervisor stops the others, so an orchestrator sees one failed process
rather than a silently shrunken one.

Metrics: the supervisor gives the workers a fresh, private directory for prometheus-client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``), so /metrics, served by the first worker, adds up the
calls every worker served. Each worker that exits is marked dead there (its live gauges go, its counters
stay counted), and the directory is removed when the supervisor is done.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from multiprocessing.process import BaseProcess

from prometheus_client import multiprocess

from delegation_service.transport.metrics import MULTIPROCESS_DIR_ENV

log = logging.getLogger(__name__)


def supervise(count: int, target: Callable[[int], int], grace_seconds: float) -> int:
    """Run ``target(worker_index)`` in ``count`` spawned processes until a signal or a worker's exit."""
    with _metrics_directory() as metrics_dir:
        return _supervise(count, target, grace_seconds, metrics_dir)


@contextlib.contextmanager
def _metrics_directory() -> Iterator[str]:
    """A fresh directory in ``PROMETHEUS_MULTIPROC_DIR`` while the workers run; removed afterwards.

    Always a new one: files left by an earlier run would be summed into this one's counters.
    """
    previous = os.environ.get(MULTIPROCESS_DIR_ENV)
    path = tempfile.mkdtemp(prefix="delegation-metrics-")
    os.environ[MULTIPROCESS_DIR_ENV] = path  # spawned workers inherit it, and read it when they start
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop(MULTIPROCESS_DIR_ENV, None)
        else:
            os.environ[MULTIPROCESS_DIR_ENV] = previous
        shutil.rmtree(path, ignore_errors=True)


def _supervise(count: int, target: Callable[[int], int], grace_seconds: float, metrics_dir: str) -> int:
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
        exited = [w for w in workers if w.exitcode is not None]
        if exited:
            log.error("a worker exited; stopping the others", extra={"event": "workers"})
            for worker in exited:
                _mark_dead(worker, metrics_dir)
            break
    for worker in workers:
        if worker.exitcode is None and worker.pid is not None:
            _signal(worker.pid, signal.SIGTERM)
    for worker in workers:
        worker.join(timeout=grace_seconds + 5)
        if worker.exitcode is None:
            worker.kill()
            worker.join()
        _mark_dead(worker, metrics_dir)
    codes = [w.exitcode or 0 for w in workers]
    return next((code for code in codes if code != 0), 0 if stopping.is_set() else 1)


def _mark_dead(worker: BaseProcess, metrics_dir: str) -> None:
    """Drop an exited worker's live gauges from the metrics directory (its counters stay summed)."""
    if worker.pid is not None:
        multiprocess.mark_process_dead(worker.pid, metrics_dir)  # type: ignore[no-untyped-call]


def _worker_main(target: Callable[[int], int], index: int) -> None:
    raise SystemExit(target(index))


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
        os.kill(pid, sig)
