"""grpc's standard health servicer, completed with ``List``.

grpcio-health-checking's ``HealthServicer`` implements ``Check`` and ``Watch`` but inherits ``List``
from the generated base class, which raises ``NotImplementedError``: every well-formed ``List`` call
then ends as UNKNOWN with a traceback in the log (found by the raw-bytes fuzz target).
"""

from __future__ import annotations

import threading
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2


class HealthServicer(health.HealthServicer):
    """``grpc.health.v1.Health`` with ``List``: the status of every service set so far."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._listed: dict[str, int] = {}
        self._listed_lock = threading.Lock()

    def set(self, service: str, status: Any) -> None:
        """Set the status of ``service`` (``""``: the whole server) for ``Check``, ``Watch`` and ``List``."""
        with self._listed_lock:
            self._listed[service] = status
        super().set(service, status)

    def List(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 (the generated name)
        """The status of each service known to the server."""
        with self._listed_lock:
            statuses = dict(self._listed)
        # The type stubs of grpcio-health-checking predate List and its messages.
        return health_pb2.HealthListResponse(  # type: ignore[attr-defined]
            statuses={name: health_pb2.HealthCheckResponse(status=value) for name, value in statuses.items()}
        )
