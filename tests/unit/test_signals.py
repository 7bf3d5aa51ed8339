"""A stop signal delivered to another thread still ends the main thread's wait (signals.py)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator

import pytest

from delegation_service.signals import wait_for_stop_signal


@pytest.fixture(autouse=True)
def restored_handlers() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_that_lands_on_another_thread_ends_the_wait(sig: signal.Signals) -> None:
    # pthread_kill delivers the signal to that thread only, as the kernel may for a process-directed
    # one; with an untimed Event.wait() in the main thread, this test would hang until its timeout.
    def deliver_here() -> None:
        threading.Event().wait(0.2)
        signal.pthread_kill(threading.get_ident(), sig)

    sender = threading.Thread(target=deliver_here, daemon=True)
    sender.start()
    assert wait_for_stop_signal() is sig
    sender.join(5)
