"""The wall clock: the production :class:`~delegation_service.domain.ports.Clock`."""

from __future__ import annotations

import time


class SystemClock:
    """The wall clock, in whole seconds since the epoch."""

    def now(self) -> int:
        """The current time."""
        return int(time.time())
