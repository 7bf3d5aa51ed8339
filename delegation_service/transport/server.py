"""The gRPC server: our two services, standard health and reflection, limits, and a health monitor."""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from delegation.v1 import admin_pb2, admin_pb2_grpc, delegation_pb2, delegation_pb2_grpc
from delegation_service.revocation_feed import RevocationFeed
from delegation_service.service import DelegationService
from delegation_service.transport import reflection
from delegation_service.transport.auth import CallerGate
from delegation_service.transport.decoding import MalformedRequestInterceptor
from delegation_service.transport.health import HealthServicer
from delegation_service.transport.interceptors import DrainInterceptor, ErrorAndAuthInterceptor
from delegation_service.transport.servicer import DelegationAdminServicer, DelegationServicer, ProofCheck
from delegation_service.transport.wrapping import Handler, WrappingInterceptor, chained

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    delegation_pb2.DESCRIPTOR.services_by_name["DelegationService"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["DelegationAdminService"].full_name,
)

MAX_MESSAGE_BYTES = 64 * 1024
"""A Delegate request is a token and a few scopes; nothing legitimate comes near this."""
MAX_METADATA_BYTES = 16 * 1024
WATCH_METHOD = "/delegation.v1.DelegationService/WatchRevocations"
STREAM_REFUSAL_THREADS = 4
"""Stream threads beyond the cap: a stream past it is refused (RESOURCE_EXHAUSTED) on one of them."""


@dataclass(frozen=True)
class ServerSettings:
    """How the gRPC server listens and how much it accepts."""

    listen: str
    max_workers: int = 8
    max_concurrent_rpcs: int = 256
    max_streams: int = 1000
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
    """A started server, its health monitor, its revocation feed and the count of its calls in flight."""

    server: grpc.Server
    port: int
    health: HealthMonitor
    feed: RevocationFeed
    calls: DrainInterceptor

    def drain(self, grace: float, drain_seconds: float = 0.0) -> bool:
        """Shutdown's first part: whether every admitted call finished within ``grace`` seconds.

        Health turns NOT_SERVING and revocation streams end (resumable) at once; for ``drain_seconds``
        new calls are still served, while load balancers notice; then new calls are answered
        UNAVAILABLE and the calls in flight get up to ``grace`` seconds to finish. (grpc's own
        ``stop(grace)`` would instead cancel the calls that arrive meanwhile, and the unfinished.)
        """
        self.health.drain()
        self.feed.stop()  # wakes every stream now, however long its heartbeat interval
        if drain_seconds > 0:
            time.sleep(drain_seconds)
        self.refuse_new_calls()
        began = time.monotonic()
        idle = self.calls.wait_idle(grace)
        log.log(
            logging.INFO if idle else logging.WARNING,
            "drained" if idle else "grace period over with calls still in flight",
            extra={
                "event": "drained",
                "in_flight": self.calls.in_flight,
                "seconds": round(time.monotonic() - began, 3),
            },
        )
        return idle

    def refuse_new_calls(self) -> None:
        """From now on new calls are answered UNAVAILABLE (``SERVER_DRAINING``)."""
        self.calls.refuse_new_calls()

    def stop(self, grace: float, drain_seconds: float = 0.0) -> None:
        """Drain, then stop the server in this process (tests, benchmarks; the CLI exits instead).

        grpc's ``stop()`` cancels what is left: calls past the grace period, and calls that reached
        the server in the last instant (refusals, done in microseconds, that it had not yet run).
        """
        self.drain(grace, drain_seconds)
        self.server.stop(0).wait()

    def wait(self) -> None:
        """Block until the server stops."""
        self.server.wait_for_termination()


class StreamThreads(WrappingInterceptor):
    """Serves ``WatchRevocations`` on threads of its own, so that open streams (each asleep until the
    feed has something for it) never take the workers that unary calls and health need (SPEC §5).

    gRPC runs a handler on the pool its behaviour names in ``experimental_thread_pool``, else on the
    server's. This interceptor must be the outermost, so that the behaviour it marks is the one gRPC runs.
    """

    def __init__(self, pool: futures.ThreadPoolExecutor) -> None:
        super().__init__()
        self._pool = pool

    def applies_to(self, method: str) -> bool:
        """Only the revocation stream."""
        return method == WATCH_METHOD

    def wrap(self, handler: Handler, method: str) -> Handler:
        """The same handler, run on the stream pool."""
        stream = handler.unary_stream
        if stream is None:
            return handler

        def on_stream_pool(request: Any, context: grpc.ServicerContext) -> Any:
            return stream(request, context)

        on_stream_pool.experimental_thread_pool = self._pool  # type: ignore[attr-defined]
        return grpc.unary_stream_rpc_method_handler(
            on_stream_pool,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def refuse_taken_address(listen: str) -> None:
    """Raise ``RuntimeError`` (one line) when ``host:port`` is taken, before gRPC tries to bind it.

    gRPC's C core would log its own multi-part ``add_port.cc`` line on stderr before the exception that
    says the same thing; a probe bind (with ``SO_REUSEADDR``, as gRPC binds) fails first and alone. Only
    "in use" and "not permitted" are reported here: anything else is left to gRPC's own bind.
    """
    host, _, port = listen.rpartition(":")
    if not port.isdigit() or int(port) == 0 or host.startswith(("unix", "vsock")):
        return
    try:
        addresses = socket.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (socket.gaierror, UnicodeError):
        return
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as error:
                if error.errno in (errno.EADDRINUSE, errno.EACCES):
                    raise RuntimeError(f"cannot listen on {listen}: {error.strerror}") from None


def start_server(
    service: DelegationService,
    feed: RevocationFeed,
    settings: ServerSettings,
    gate: CallerGate,
    outer_interceptors: Sequence[grpc.ServerInterceptor] = (),
    *,
    ready: Callable[[], bool] | None = None,
    prove: ProofCheck | None = None,
) -> RunningServer:
    """Build, bind and start the server; raise ``RuntimeError`` when the address cannot be bound.

    ``outer_interceptors`` run before (around) the service's own, e.g. metrics and the access log,
    which must see the final status of every call. ``ready`` is the readiness probe (default: the
    store answers); the application adds its trusted issuers' keys.
    """
    if not settings.reuse_port:
        refuse_taken_address(settings.listen)
    # One thread per stream up to the cap, and a few more that only ever refuse the next ones at once.
    stream_pool = futures.ThreadPoolExecutor(
        max_workers=settings.max_streams + STREAM_REFUSAL_THREADS, thread_name_prefix="stream"
    )
    draining = threading.Event()
    calls = DrainInterceptor(draining)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.max_workers, thread_name_prefix="rpc"),
        interceptors=chained(
            [
                StreamThreads(stream_pool),
                *outer_interceptors,
                calls,
                MalformedRequestInterceptor(),
                ErrorAndAuthInterceptor(gate),
            ]
        ),
        # gRPC counts streams in this limit too: they get a budget of their own beside the unary one.
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs + settings.max_streams,
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
    delegation_pb2_grpc.add_DelegationServiceServicer_to_server(
        DelegationServicer(service, feed, draining, prove), server
    )
    admin_pb2_grpc.add_DelegationAdminServiceServicer_to_server(DelegationAdminServicer(service), server)
    health_servicer = HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if settings.reflection:
        reflection.enable((*SERVICE_NAMES, health.SERVICE_NAME), server)
    try:
        if settings.credentials is None:
            port = server.add_insecure_port(settings.listen)
        else:
            port = server.add_secure_port(settings.listen, settings.credentials)
    except RuntimeError as error:
        raise RuntimeError(f"cannot listen on {settings.listen}: {error}") from None
    if port == 0:
        raise RuntimeError(f"cannot listen on {settings.listen}")
    monitor = HealthMonitor(health_servicer, ready or service.ready, draining=draining)
    feed.start()
    server.start()
    monitor.start()
    log.info("serving", extra={"event": "serving", "listen": settings.listen, "port": port})
    return RunningServer(server, port, monitor, feed, calls)
