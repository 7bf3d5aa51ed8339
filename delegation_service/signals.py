"""Waiting for SIGTERM or SIGINT in the main thread, promptly.

Python runs signal handlers in the main thread only, and a process-directed signal may be delivered to
any thread (gRPC's and ours included). A main thread asleep in an untimed ``Event.wait()`` is then not
woken: the handler waits until something else wakes it. Seen as a drain that began seconds late, or
never (``tests/operability/test_graceful_shutdown.py`` failed about one run in four). Waking often
bounds that delay; a timed wait costs nothing measurable.
"""

from __future__ import annotations

import signal
import threading

WAKE_SECONDS = 0.05
"""The longest a stop signal delivered to another thread waits before its handler runs."""


def wait_for_stop_signal() -> signal.Signals:
    """Install handlers for SIGTERM and SIGINT and block until one arrives; which one."""
    received: list[signal.Signals] = []
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signal.Signals(signum))
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    while not stop.wait(WAKE_SECONDS):
        pass
    return received[0]
