"""The deadline of the call being served, where the adapters that wait on I/O for it can read it.

The transport sets it per call (from gRPC's ``time_remaining``); the Redis connection caps each socket
wait by it, so no store wait outlasts the caller (SPEC §5). Standard library only: every layer may
import it. Outside a call (health probes, start-up) there is no deadline.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_deadline: ContextVar[float | None] = ContextVar("call_deadline", default=None)
"""``time.monotonic()`` at which the current call's caller gives up; ``None`` for no deadline."""


def remaining() -> float | None:
    """Seconds left before the current call's deadline (may be negative); ``None`` when it has none."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()


@contextmanager
def call_deadline(seconds_left: float | None) -> Iterator[None]:
    """Run the body with a deadline ``seconds_left`` from now (``None``: none).

    Cleared with a plain ``set`` rather than a token ``reset``: a streaming handler's generator can be
    closed from another thread's context, where a token would not reset.
    """
    _deadline.set(None if seconds_left is None else time.monotonic() + seconds_left)
    try:
        yield
    finally:
        _deadline.set(None)
