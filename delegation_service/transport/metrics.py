"""Prometheus metrics and the per-RPC access log: one more server interceptor, outside the others.

The gRPC server metrics follow py-grpc-prometheus (itself after go-grpc-prometheus), so the dashboards
and alerts platform teams already have work unchanged:

- ``grpc_server_started_total{grpc_type,grpc_service,grpc_method}``
- ``grpc_server_handled_total{grpc_type,grpc_service,grpc_method,grpc_code}``
- ``grpc_server_handling_seconds{grpc_type,grpc_service,grpc_method}`` (histogram)
- ``grpc_server_msg_received_total{grpc_type,grpc_service,grpc_method}``
- ``grpc_server_msg_sent_total{grpc_type,grpc_service,grpc_method}``

and, beside them, ``grpc_server_open_streams{grpc_type,grpc_service,grpc_method}``: the streaming calls
in progress (``WatchRevocations`` followers, ``Health/Watch``), which the counters show only as a
difference of two series that reset independently.

``grpc_code`` is the status name (``OK``, ``PERMISSION_DENIED``, ...). The domain metrics are derived
here and in :mod:`delegation_service.adapters.metered_registry` from what crosses the edges (responses,
statuses, store calls), so ``domain/`` and the use cases know nothing of Prometheus.

Each :class:`ServiceMetrics` owns its :class:`~prometheus_client.CollectorRegistry` instead of using the
process-wide default: several applications can then live in one process (tests) without clashing.

With ``serve --workers N`` the supervisor sets ``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's
multiprocess mode) before it starts the workers: each worker's counters, histograms and gauges live in
files there, and /metrics (served by one worker) sums every worker's with a ``MultiProcessCollector``
(:meth:`ServiceMetrics.exposition_registry`). The info metrics are the same in every worker and come
from the serving worker; per-process metrics (``process_*``, ``python_gc_*``) are left out then, since
one worker's figures would pass for the whole server's.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
)
from prometheus_client.multiprocess import MultiProcessCollector

from delegation_service import audit, version
from delegation_service.logs import emit
from delegation_service.transport.wrapping import Handler, WrappingInterceptor

access_log = logging.getLogger("delegation_service.access")

MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus-client's multiprocess mode: set (by ``serve --workers``) before the workers start."""

STATUS_DETAILS_KEY = "grpc-status-details-bin"
DELEGATE_METHOD = "/delegation.v1.DelegationService/Delegate"
QUIET_SERVICE_PREFIX = "/grpc.health.v1.Health/"
"""Probes call Health every few seconds: their access lines go to DEBUG, their metrics are kept."""

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds. A Delegate call is a signature check, one or two Redis round trips and one signature."""

UNARY, SERVER_STREAMING, CLIENT_STREAMING, BIDI_STREAMING = (
    "UNARY",
    "SERVER_STREAMING",
    "CLIENT_STREAMING",
    "BIDI_STREAMING",
)


class ServiceMetrics:
    """Every metric the service exports, registered in one registry of its own."""

    def __init__(self, registry: CollectorRegistry | None = None, process_metrics: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        # prometheus-client chose where values live when it was imported, from the same variable.
        self.multiprocess = bool(os.environ.get(MULTIPROCESS_DIR_ENV))
        self._process_metrics = process_metrics
        self._exposition: CollectorRegistry | None = None
        if process_metrics:
            # The default collectors of prometheus-client (process_*, python_info, python_gc_*), which
            # only register themselves in the global registry.
            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                self.registry.register(collector)
        rpc_labels = ("grpc_type", "grpc_service", "grpc_method")
        self.started = Counter(
            "grpc_server_started_total",
            "Total number of RPCs started on the server.",
            rpc_labels,
            registry=self.registry,
        )
        self.handled = Counter(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            (*rpc_labels, "grpc_code"),
            registry=self.registry,
        )
        self.handling_seconds = Histogram(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level handled "
            "by the server.",
            rpc_labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.msg_received = Counter(
            "grpc_server_msg_received_total",
            "Total number of RPC stream messages received on the server.",
            rpc_labels,
            registry=self.registry,
        )
        self.msg_sent = Counter(
            "grpc_server_msg_sent_total",
            "Total number of gRPC stream messages sent by the server.",
            rpc_labels,
            registry=self.registry,
        )
        self.open_streams = Gauge(
            "grpc_server_open_streams",
            "Streaming RPCs in progress on the server (revocation followers, health watchers).",
            rpc_labels,
            registry=self.registry,
            multiprocess_mode="livesum",  # every worker's open streams, added up
        )
        self.tokens_issued = Counter(
            "delegation_tokens_issued_total",
            "Child tokens minted, by target client.",
            ("client_id",),
            registry=self.registry,
        )
        self.delegations_validated = Counter(
            "delegation_delegations_validated_total",
            "Delegate calls with validate_only that passed every check (nothing minted).",
            registry=self.registry,
        )
        self.tokens_denied = Counter(
            "delegation_tokens_denied_total",
            "Delegate calls refused, by ErrorInfo reason (INVALID_PARENT_TOKEN, "
            "SCOPE_WAS_NOT_GRANTED_IN_PARENT, ...).",
            ("reason",),
            registry=self.registry,
        )
        self.revocations = Counter(
            "delegation_revocations_total",
            "Revocations written, by kind: token, chain, subject or client.",
            ("kind",),
            registry=self.registry,
        )
        self.store_errors = Counter(
            "delegation_store_errors_total",
            "Token store (Redis) calls that failed, by operation.",
            ("operation",),
            registry=self.registry,
        )
        self.store_seconds = Histogram(
            "delegation_store_operation_duration_seconds",
            "Latency of token store (Redis) calls, by operation.",
            ("operation",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.signing_key = Info(
            "delegation_signing_key",
            "The active signing key: its kid (RFC 7638 thumbprint) and algorithm.",
            registry=self.registry,
        )
        self.verification_keys = Gauge(
            "delegation_verification_keys",
            "Keys published in the JWKS (the active one and those kept for rotation).",
            registry=self.registry,
            multiprocess_mode="livemax",  # the same in every worker: one series, not one per pid
        )
        self.jwks_fetches = Counter(
            "delegation_jwks_fetches_total",
            "Successful fetches of a trusted issuer's JWKS (discovery included), by issuer.",
            ("issuer",),
            registry=self.registry,
        )
        self.jwks_fetch_failures = Counter(
            "delegation_jwks_fetch_failures_total",
            "Failed fetches of a trusted issuer's JWKS, by issuer and reason (unreachable, timeout, "
            "http_status, too_large, invalid_json, invalid_jwks, issuer_mismatch, ...).",
            ("issuer", "reason"),
            registry=self.registry,
        )
        self.jwks_keys = Gauge(
            "delegation_jwks_keys",
            "Usable keys loaded from a trusted issuer's JWKS, by issuer.",
            ("issuer",),
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.jwks_age = Gauge(
            "delegation_jwks_age_seconds",
            "Age of a trusted issuer's key set in use (since its last successful fetch); -1 before any.",
            ("issuer",),
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.build = Info("delegation_build", "The running version.", registry=self.registry)
        self.build.info({"version": version()})

    def exposition_registry(self) -> CollectorRegistry:
        """What /metrics serves: this process's registry or, with several workers, all of theirs summed."""
        if not self.multiprocess:
            return self.registry
        if self._exposition is None:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            # Info metrics do not work in multiprocess mode: they hold the same values in every worker,
            # so the serving worker's own are the server's.
            registry.register(self.signing_key)
            registry.register(self.build)
            if self._process_metrics:
                registry.register(PLATFORM_COLLECTOR)
            self._exposition = registry
        return self._exposition

    def describe_keys(self, active_kid: str, active_alg: str, jwks: Mapping[str, object]) -> None:
        """Record the active signing key and how many keys the published JWKS holds."""
        keys = jwks.get("keys")
        self.verification_keys.set(len(keys) if isinstance(keys, list) else 0)
        self.signing_key.info({"kid": active_kid, "alg": active_alg})


class JwksMetrics:
    """A remote key source's events (``KeySourceEvents``) counted in :class:`ServiceMetrics`."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self._metrics = metrics

    def fetched(self, issuer: str, keys: int) -> None:
        """Count a successful fetch and record how many keys it loaded."""
        self._metrics.jwks_fetches.labels(issuer).inc()
        self._metrics.jwks_keys.labels(issuer).set(keys)

    def failed(self, issuer: str, reason: str) -> None:
        """Count a failed fetch."""
        self._metrics.jwks_fetch_failures.labels(issuer, reason).inc()

    def age(self, issuer: str, seconds: float | None) -> None:
        """Record the age of the key set in use (-1: none yet)."""
        self._metrics.jwks_age.labels(issuer).set(-1 if seconds is None else seconds)


MAX_LABEL_CHILDREN = 1024
"""Label children kept per cache (codes, reasons, client ids: bounded sets, capped all the same)."""

_OK = grpc.StatusCode.OK


class MetricsInterceptor(WrappingInterceptor):
    """Counts and times every RPC (health and reflection included) and writes one access log line each.

    Install it first (outermost), so it sees the final status the inner interceptors set, including
    refusals of operator credentials. The access line names the method, the status code, the duration,
    the peer and, when the response carries them, the token and chain ids; never a token or a request.

    Metrics and the access line are one piece of work per call: the clock is read twice, the status once,
    and everything that depends only on the method (its labels, its metric children, its log level) is
    resolved once per method and kept, with the wrapped handler itself.
    """

    def __init__(self, metrics: ServiceMetrics) -> None:
        super().__init__()
        self._metrics = metrics

    def wrap(self, handler: Handler, method: str) -> Handler:
        """The handler with timing, counting and the access line around it."""
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _unary(handler.unary_unary, _Method(self._metrics, method, UNARY)),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _streaming(handler.unary_stream, _Method(self._metrics, method, SERVER_STREAMING)),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _unary(handler.stream_unary, _Method(self._metrics, method, CLIENT_STREAMING)),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                _streaming(handler.stream_stream, _Method(self._metrics, method, BIDI_STREAMING)),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def _received(request: Any, method: _Method) -> Any:
    """Count the request message (unary request), or each one as the handler reads it (a stream)."""
    if not method.streams_requests:
        method.received.inc()
        return request

    def counted() -> Iterator[Any]:
        for message in request:
            method.received.inc()
            yield message

    return counted()


def _unary(behavior: Callable[[Any, grpc.ServicerContext], Any], method: _Method) -> Any:
    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        method.started.inc()
        held = audit.hold()  # the call's audit event, if any, becomes its one line
        start = time.perf_counter()
        response = None
        fallback = _OK
        try:
            response = behavior(_received(request, method), context)
            return response
        except BaseException:
            # The handler raised: an abort has set the code; anything else reaches the caller as UNKNOWN.
            fallback = grpc.StatusCode.UNKNOWN
            raise
        finally:
            audit.release()
            method.finish(context, time.perf_counter() - start, response, fallback, held)

    return handle


def _streaming(behavior: Callable[[Any, grpc.ServicerContext], Iterator[Any]], method: _Method) -> Any:
    def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        method.started.inc()
        open_streams = method.open_streams
        if open_streams is not None:
            open_streams.inc()
        start = time.perf_counter()
        fallback = _OK
        sent = method.sent
        try:
            for message in behavior(_received(request, method), context):
                sent.inc()
                yield message
        except GeneratorExit:
            fallback = grpc.StatusCode.CANCELLED  # the caller went away, or the server stopped the stream
            raise
        except BaseException:
            fallback = grpc.StatusCode.UNKNOWN
            raise
        finally:
            if open_streams is not None:
                open_streams.dec()
            method.finish(context, time.perf_counter() - start, None, fallback)

    return handle


class _Method:
    """What never changes for one method: its labels, metric children and access-line level."""

    def __init__(self, metrics: ServiceMetrics, method: str, kind: str) -> None:
        self._metrics = metrics
        self.method = method
        service, _, self.name = method.lstrip("/").rpartition("/")
        self._labels = (kind, service, self.name)
        self.started = metrics.started.labels(*self._labels)
        self.received = metrics.msg_received.labels(*self._labels)
        self.sent = metrics.msg_sent.labels(*self._labels)
        self.streams_requests = kind in (CLIENT_STREAMING, BIDI_STREAMING)
        self._streams_responses = kind in (SERVER_STREAMING, BIDI_STREAMING)
        # Only streaming methods get a gauge series (a unary one would stay 0, and with workers each
        # series is one more value in every worker's metrics file).
        self.open_streams = metrics.open_streams.labels(*self._labels) if self._streams_responses else None
        self._handling = metrics.handling_seconds.labels(*self._labels)
        self._handled: dict[str, Any] = {}
        self._denied: dict[str, Any] = {}
        self._issued: dict[str, Any] = {}
        self._delegate = method == DELEGATE_METHOD
        self._level = logging.DEBUG if method.startswith(QUIET_SERVICE_PREFIX) else logging.INFO

    def finish(
        self,
        context: grpc.ServicerContext,
        elapsed: float,
        response: Any,
        fallback: grpc.StatusCode,
        held: Sequence[audit.HeldEvent] = (),
    ) -> None:
        """Count, time and log one call: its access line or, when it recorded an audit event (``held``),
        that event with the access line's fields, on the audit logger: one line per call either way."""
        # grpcio's ServicerContext has code() at run time; the type stubs leave it out.
        code: grpc.StatusCode = context.code() or fallback  # type: ignore[attr-defined]
        code_name: str = code.name
        handled = self._handled.get(code_name)
        if handled is None:
            handled = _child(self._handled, code_name, self._metrics.handled, *self._labels, code_name)
        handled.inc()
        if response is not None and code is _OK and not self._streams_responses:
            self.sent.inc()  # a unary response (a stream counts each message as it goes)
        self._handling.observe(elapsed)
        reason = "" if code is _OK else error_reason(context)
        if self._delegate:
            self._count_delegate(code, code_name, reason, response)
        if not access_log.isEnabledFor(self._level):
            if held:
                audit.write_held(held[0], {})
            return
        fields: dict[str, object] = {
            "event": "rpc",
            "method": self.method,
            "code": code_name,
            "duration_ms": round(elapsed * 1000, 3),
            "peer": context.peer(),
            "reason": reason,
        }
        if response is not None:
            token_id = getattr(response, "token_id", "")
            if token_id and isinstance(token_id, str):
                fields["jti"] = token_id
            chain_id = getattr(response, "chain_id", "")
            if chain_id and isinstance(chain_id, str):
                fields["chain_id"] = chain_id
        if held:
            audit.write_held(held[0], fields)  # its own event ("delegate", "revoke", ...) names the line
            return
        emit(access_log, self._level, "rpc %s %s", (self.name, code_name), fields)

    def _count_delegate(self, code: grpc.StatusCode, code_name: str, reason: str, response: Any) -> None:
        metrics = self._metrics
        if code is not _OK:
            label = reason or code_name
            denied = self._denied.get(label) or _child(self._denied, label, metrics.tokens_denied, label)
            denied.inc()
        elif response is not None and response.access_token:
            client_id = response.client_id
            issued = self._issued.get(client_id) or _child(
                self._issued, client_id, metrics.tokens_issued, client_id
            )
            issued.inc()
        elif response is not None:
            metrics.delegations_validated.inc()


def _child(cache: dict[str, Any], key: str, family: Any, *labels: str) -> Any:
    """``family.labels(*labels)``, kept in ``cache`` under ``key`` (bounded)."""
    child = family.labels(*labels)
    if len(cache) >= MAX_LABEL_CHILDREN:
        cache.clear()
    cache[key] = child
    return child


def error_reason(context: grpc.ServicerContext) -> str:
    """The ``ErrorInfo.reason`` of the status the handler set, if it set a rich one."""
    for key, value in context.trailing_metadata() or ():
        if key != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                return str(info.reason)
    return ""
