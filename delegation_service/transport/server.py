"""The gRPC server: our two services, standard health and reflection, limits, and a health monitor."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from delegation.v1 import admin_pb2, admin_pb2_grpc, delegation_pb2, delegation_pb2_grpc
from delegation_service.service import DelegationService
from delegation_service.transport.auth import CallerGate
from delegation_service.transport.decoding import MalformedRequestInterceptor
from delegation_service.transport.health import HealthServicer
from delegation_service.transport.interceptors import ErrorAndAuthInterceptor
from delegation_service.transport.servicer import DelegationAdminServicer, DelegationServicer

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    delegation_pb2.DESCRIPTOR.services_by_name["DelegationService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["DelegationAdminService"].full_name,
)

MAX_MESSAGE_BYTES = 64 * 1024
"""A Delegate request is a token and a few scopes; nothing legitimate comes near this."""
MAX_METADATA_BYTES = 16 * 1024


@dataclass(frozen=True)
class ServerSettings:
    """How the gRPC server listens and how much it accepts."""

    listen: str
    max_workers: int = 8
    max_concurrent_rpcs: int = 256
    reflection: bool = True
    reuse_port: bool = False
    credentials: grpc.ServerCredentials | None = None
    handshake_timeout_seconds: float = 5.0


class HealthMonitor:
    """Keeps ``grpc.health.v1`` in step with the store: NOT_SERVING while it does not answer, or draining."""

    def __init__(
        self,
        servicer: health.HealthServicer,
        probe: Callable[[], bool],
        interval: float = 1.0,
        draining: threading.Event | None = None,
    ):
        self._servicer = servicer
        self._probe = probe
        self._interval = interval
        self._stop = threading.Event()
        # Set when shutdown begins: long-lived streams end on it instead of holding the drain.
        self.draining = draining if draining is not None else threading.Event()
        self._draining = False
        self._status: int = health_pb2.HealthCheckResponse.UNKNOWN
        self._thread = threading.Thread(target=self._run, name="health-monitor", daemon=True)

    def start(self) -> None:
        """Probe once now, then in the background."""
        self._update()
        self._thread.start()

    def drain(self) -> None:
        """Report NOT_SERVING from now on (shutdown has begun)."""
        self._draining = True
        self.draining.set()
        self._stop.set()
        self._set(health_pb2.HealthCheckResponse.NOT_SERVING)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._update()

    def _update(self) -> None:
        try:
            ok = self._probe()
        except Exception:
            ok = False
        if not self._draining:
            self._set(
                health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
            )

    @property
    def serving(self) -> bool:
        """Whether the server reports SERVING right now (the store answers and it is not draining)."""
        return self._status == health_pb2.HealthCheckResponse.SERVING and not self._draining

    def _set(self, status: int) -> None:
        self._status = status
        for name in ("", *SERVICE_NAMES):
            self._servicer.set(name, status)


@dataclass
class RunningServer:
    """A started server and its health monitor."""

    server: grpc.Server
    port: int
    health: HealthMonitor

    def stop(self, grace: float) -> None:
        """Report NOT_SERVING, refuse new RPCs, let in-flight ones finish within ``grace`` seconds."""
        self.health.drain()
        self.server.stop(grace).wait()

    def wait(self) -> None:
        """Block until the server stops."""
        self.server.wait_for_termination()


def start_server(
    service: DelegationService,
    settings: ServerSettings,
    gate: CallerGate,
    outer_interceptors: Sequence[grpc.ServerInterceptor] = (),
) -> RunningServer:
    """Build, bind and start the server; raise ``RuntimeError`` when the address cannot be bound.

    ``outer_interceptors`` run before (around) the service's own, e.g. metrics and the access log,
    which must see the final status of every call.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.max_workers, thread_name_prefix="rpc"),
        interceptors=[*outer_interceptors, MalformedRequestInterceptor(), ErrorAndAuthInterceptor(gate)],
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        options=[
            # Off unless asked for: a second server must fail loudly on a busy port, not share it.
            ("grpc.so_reuseport", 1 if settings.reuse_port else 0),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
            # A connection must finish TLS and send its HTTP/2 preface by then, or it is closed: slow
            # or idle clients cannot hold sockets open during the handshake (gRPC's default is 120 s).
            ("grpc.server_handshake_timeout_ms", int(settings.handshake_timeout_seconds * 1000)),
        ],
    )
    draining = threading.Event()
    delegation_pb2_grpc.add_DelegationServiceServicer_to_server(DelegationServicer(service, draining), server)
    admin_pb2_grpc.add_DelegationAdminServiceServicer_to_server(DelegationAdminServicer(service), server)
    health_servicer = HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if settings.reflection:
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
    try:
        if settings.credentials is None:
            port = server.add_insecure_port(settings.listen)
        else:
            port = server.add_secure_port(settings.listen, settings.credentials)
    except RuntimeError as error:
        raise RuntimeError(f"cannot listen on {settings.listen}: {error}") from None
    if port == 0:
        raise RuntimeError(f"cannot listen on {settings.listen}")
    monitor = HealthMonitor(health_servicer, service.ready, draining=draining)
    server.start()
    monitor.start()
    log.info("serving", extra={"event": "serving", "listen": settings.listen, "port": port})
    return RunningServer(server, port, monitor)
