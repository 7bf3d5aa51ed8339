"""``serve --workers N``: N server processes on one port, so one host uses all its cores.

gRPC's Python server runs one process's RPCs under one GIL; several processes sharing the port through
SO_REUSEPORT let the kernel spread connections over them. Each worker builds its own application (its
own Redis connection pool, keys and caches) from the same configuration. The supervisor forwards
SIGTERM/SIGINT to every worker, waits for their graceful drain, and exits with the first failure.

A worker that dies on its own (a crash, the OOM killer, a SIGKILL) is restarted after a delay that
doubles with each of its recent crashes (:class:`RestartPolicy`); meanwhile the other workers go on
answering on the port. Only a crash loop (more than ``crash_loop_crashes`` crashes of one worker within
``crash_loop_window_seconds``) makes the supervisor give up: it logs why, stops the others and exits 1,
so an orchestrator sees a failed process rather than one that restarts forever.

Metrics: the supervisor gives the workers a fresh, private directory for prometheus-client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``), so /metrics, served by the first worker, adds up the
calls every worker served. Each worker that exits is marked dead there (its live gauges go, its counters
stay counted), and the directory is removed when the supervisor is done. The supervisor keeps its own
counter, ``delegation_worker_restarts_total``, in that directory too, so the same /metrics reports it
(while the first worker itself restarts, /metrics is down for that moment; each restart is also logged
with the running count).
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
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.context import SpawnContext
from multiprocessing.process import BaseProcess

from prometheus_client import multiprocess, values

from delegation_service.transport.metrics import MULTIPROCESS_DIR_ENV

log = logging.getLogger(__name__)

EXIT_CRASH_LOOP = 1
POLL_SECONDS = 0.2
RESTARTS_METRIC = "delegation_worker_restarts"
RESTARTS_HELP = "Workers the supervisor restarted after they died on their own."


@dataclass(frozen=True)
class RestartPolicy:
    """When a worker that died is started again, and when the supervisor gives up instead."""

    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 15.0
    crash_loop_crashes: int = 5
    crash_loop_window_seconds: float = 60.0

    def delay(self, recent_crashes: int) -> float:
        """The wait before the next start of a worker that crashed ``recent_crashes`` times lately."""
        doublings = max(0, recent_crashes - 1)
        return float(min(self.max_backoff_seconds, self.backoff_seconds * 2.0**doublings))


@dataclass
class _Slot:
    """One worker index: its current process (``None`` while it waits to restart) and recent crashes."""

    index: int
    process: BaseProcess | None = None
    crashes: deque[float] = field(default_factory=deque)
    restart_at: float = 0.0


def supervise(
    count: int,
    target: Callable[[int], int],
    stop_seconds: float,
    policy: RestartPolicy | None = None,
) -> int:
    """Run ``target(worker_index)`` in ``count`` spawned processes until a signal or a crash loop.

    ``stop_seconds`` is how long a worker may take to drain after SIGTERM before it is killed.
    """
    with _metrics_directory() as metrics_dir:
        return _Supervisor(count, target, stop_seconds, policy or RestartPolicy(), metrics_dir).run()


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


class _Supervisor:
    """Starts the workers, restarts the ones that die, stops them all on a signal or a crash loop."""

    def __init__(
        self,
        count: int,
        target: Callable[[int], int],
        stop_seconds: float,
        policy: RestartPolicy,
        metrics_dir: str,
    ) -> None:
        self._context: SpawnContext = multiprocessing.get_context("spawn")  # no grpc state may cross a fork
        self._target = target
        self._stop_seconds = stop_seconds
        self._policy = policy
        self._metrics_dir = metrics_dir
        self._slots = [_Slot(index) for index in range(count)]
        self._stopping = threading.Event()
        self._restarts = 0
        # The supervisor's one metric, in the workers' directory: its counter file is summed with theirs.
        self._restarts_value = values.MultiProcessValue()(  # type: ignore[no-untyped-call]
            "counter", RESTARTS_METRIC, f"{RESTARTS_METRIC}_total", (), (), RESTARTS_HELP
        )

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._stopping.set())
        for slot in self._slots:
            self._start(slot)
        log.info(
            "workers started",
            extra={"event": "workers", "count": len(self._slots), "pids": self._pids()},
        )
        gave_up = False
        while not gave_up and not self._stopping.wait(POLL_SECONDS):
            gave_up = not all(self._tend(slot, time.monotonic()) for slot in self._slots)
        return self._stop_all(gave_up)

    def _tend(self, slot: _Slot, now: float) -> bool:
        """Notice a dead worker and schedule its restart, or restart it when due; false on a crash loop."""
        process = slot.process
        if process is not None and process.exitcode is not None:
            _mark_dead(process, self._metrics_dir)
            slot.process = None
            slot.crashes.append(now)
            while slot.crashes and slot.crashes[0] < now - self._policy.crash_loop_window_seconds:
                slot.crashes.popleft()
            if len(slot.crashes) > self._policy.crash_loop_crashes:
                log.error(
                    "worker %d crashed %d times within %g s: crash loop, giving up (stopping every worker)",
                    slot.index,
                    len(slot.crashes),
                    self._policy.crash_loop_window_seconds,
                    extra={"event": "crash_loop", "worker": slot.index, "exit_code": process.exitcode},
                )
                return False
            delay = self._policy.delay(len(slot.crashes))
            slot.restart_at = now + delay
            log.error(
                "worker %d (pid %s) exited with %s; restarting it in %g s",
                slot.index,
                process.pid,
                process.exitcode,
                delay,
                extra={"event": "worker_exited", "worker": slot.index, "exit_code": process.exitcode},
            )
        if slot.process is None and now >= slot.restart_at:
            self._start(slot)
            self._restarts += 1
            self._restarts_value.inc(1)
            log.warning(
                "worker %d restarted",
                slot.index,
                extra={
                    "event": "worker_restarted",
                    "worker": slot.index,
                    "pid": self._pid(slot),
                    "worker_restarts_total": self._restarts,
                },
            )
        return True

    def _start(self, slot: _Slot) -> None:
        process = self._context.Process(
            target=_worker_main, args=(self._target, slot.index), name=f"worker-{slot.index}", daemon=False
        )
        process.start()
        slot.process = process

    def _pids(self) -> list[int | None]:
        return [self._pid(slot) for slot in self._slots]

    @staticmethod
    def _pid(slot: _Slot) -> int | None:
        return slot.process.pid if slot.process is not None else None

    def _stop_all(self, gave_up: bool) -> int:
        """SIGTERM every live worker, wait for its drain (kill it past ``stop_seconds``); the exit code."""
        running = [slot.process for slot in self._slots if slot.process is not None]
        for process in running:
            if process.exitcode is None and process.pid is not None:
                _signal(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self._stop_seconds + 5
        for process in running:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                process.kill()
                process.join()
            _mark_dead(process, self._metrics_dir)
        if gave_up:
            return EXIT_CRASH_LOOP
        return next((code for code in (p.exitcode or 0 for p in running) if code != 0), 0)


def _mark_dead(worker: BaseProcess, metrics_dir: str) -> None:
    """Drop an exited worker's live gauges from the metrics directory (its counters stay summed)."""
    if worker.pid is not None:
        multiprocess.mark_process_dead(worker.pid, metrics_dir)  # type: ignore[no-untyped-call]


def _worker_main(target: Callable[[int], int], index: int) -> None:
    raise SystemExit(target(index))


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
        os.kill(pid, sig)
