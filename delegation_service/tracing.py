"""OpenTelemetry tracing (``tracing.exporter``): a span for every RPC and every token-store call.

Off by default, and then neither this module nor any instrumentation or exporter is imported: the
composition root imports it only when ``tracing.exporter`` is set, and the packages come with the
``tracing`` extra (``pip install 'delegation-service[tracing]'``).

- **RPCs**: the official ``opentelemetry-instrumentation-grpc`` server interceptor makes one SERVER span
  per call (``rpc.system``, ``rpc.service``, ``rpc.method``, the peer; a ``traceparent`` in the call's
  metadata makes it a child of the caller's span). :class:`SpanAttributesInterceptor`, just inside it,
  adds what only this service knows: ``delegation.chain_id`` and ``delegation.client_id`` (from the
  request or the response), and the final status with its ``ErrorInfo`` reason; the instrumentation
  sees ``abort()`` but not ``abort_with_status()``, which is how every refusal here is sent.
- **Store calls**: :class:`TracedRegistry` wraps the token store port, one CLIENT span per call
  (``db.system.name`` ``redis`` or ``memory``, ``db.operation.name`` the port's method, the chain id).
  Each port call is one Redis round trip (a script or a pipeline), so a span per call is a span per
  Redis wait. redis-py's own instrumentation was not used: it patches redis-py for the whole process
  (every client, tests' too) and puts the commands' arguments, key names holding ids and Lua arguments,
  into ``db.statement``; the port knows which of its arguments are safe to show.

Store spans are made only inside a recorded span (a traced call): the revocation feed's follower and
the health monitor call the store in the background several times a second, and a root trace for each
would drown the calls. Never a token, a request body or metadata: attributes are ids, names and codes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import server_interceptor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode

from delegation_service import version
from delegation_service.config import Config, ConfigError
from delegation_service.domain.ports import ChainRevocation, MintOutcome, RevocationEvent, TokenRegistry
from delegation_service.domain.revocation import ChainSnapshot, HorizonKey, StateSnapshot, TokenRecord
from delegation_service.transport.metrics import error_reason
from delegation_service.transport.wrapping import Handler, WrappingInterceptor

CHAIN_ID = "delegation.chain_id"
CLIENT_ID = "delegation.client_id"
ERROR_REASON = "delegation.error_reason"
GRPC_STATUS_CODE = "rpc.grpc.status_code"
_T = TypeVar("_T")


@dataclass
class Tracing:
    """The tracer provider of one application (not the process-wide one), and what it instruments."""

    provider: TracerProvider

    def server_interceptors(self) -> list[grpc.ServerInterceptor]:
        """The RPC span (outer), then the service's attributes on it."""
        # The instrumentation is untyped.
        official: grpc.ServerInterceptor = server_interceptor(
            tracer_provider=_NoExceptionEvents(self.provider)
        )  # type: ignore[no-untyped-call]
        return [official, SpanAttributesInterceptor()]

    def registry(self, inner: TokenRegistry, system: str) -> TokenRegistry:
        """``inner`` with a span around every call made inside a traced RPC."""
        return TracedRegistry(inner, self.provider.get_tracer(__name__, version()), system)

    def shutdown(self) -> None:
        """Export what is still buffered and stop the exporter."""
        self.provider.shutdown()


class _NoExceptionEvents:
    """The provider, handing the gRPC instrumentation tracers that record no exception events.

    Every refusal here is ``abort_with_status()``, which raises a bare ``Exception``; the SDK's
    ``start_as_current_span`` would record each as an ``exception`` event with a stack trace (the
    instrumentation means to skip aborts but cannot stop the SDK). An exception's message could also
    carry what a caller sent, so none is recorded: the status code and reason say what happened.
    """

    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider

    def get_tracer(self, *args: Any, **kwargs: Any) -> _NoExceptionEventsTracer:
        """The provider's tracer, wrapped."""
        return _NoExceptionEventsTracer(self._provider.get_tracer(*args, **kwargs))


class _NoExceptionEventsTracer:
    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        """The tracer's, with ``record_exception=False``."""
        return self._tracer.start_as_current_span(*args, **{**kwargs, "record_exception": False})

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        """The tracer's, with ``record_exception=False``."""
        return self._tracer.start_span(*args, **{**kwargs, "record_exception": False})


def build_tracing(config: Config) -> Tracing | None:
    """The tracing ``config`` asks for; ``None`` when it is off."""
    if config.tracing_exporter == "none":
        return None
    provider = TracerProvider(
        resource=Resource.create({"service.name": config.tracing_service_name, "service.version": version()}),
        sampler=ParentBased(TraceIdRatioBased(config.tracing_sample_ratio)),
    )
    provider.add_span_processor(BatchSpanProcessor(_exporter(config.tracing_exporter)))
    return Tracing(provider)


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415 (optional)
            OTLPSpanExporter,
        )
    except ImportError:
        raise ConfigError(
            "tracing.exporter",
            "otlp needs opentelemetry-exporter-otlp-proto-grpc: pip install 'delegation-service[tracing]'",
        ) from None
    return OTLPSpanExporter()


class SpanAttributesInterceptor(WrappingInterceptor):
    """Puts the chain id, the client and the final status on the current RPC span.

    Ids are read from the request and the response (``chain_id``, ``client_id`` fields, whichever the
    message has); a ``parent_token`` or ``access_token`` field is never read.
    """

    def wrap(self, handler: Handler, method: str) -> Handler:
        """The handler, annotating its span; streams are annotated from their request only."""
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _annotated_unary(handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _annotated_stream(handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def _annotate_ids(span: trace.Span, message: Any) -> None:
    for attribute, field in ((CHAIN_ID, "chain_id"), (CLIENT_ID, "client_id")):
        value = getattr(message, field, None)
        if isinstance(value, str) and value:
            span.set_attribute(attribute, value)


def _annotate_status(span: trace.Span, context: grpc.ServicerContext, fallback: grpc.StatusCode) -> None:
    # grpcio's ServicerContext has code() at run time; the type stubs leave it out.
    code: grpc.StatusCode = context.code() or fallback  # type: ignore[attr-defined]
    span.set_attribute(GRPC_STATUS_CODE, code.value[0])
    if code is grpc.StatusCode.OK:
        return
    reason = error_reason(context)
    if reason:
        span.set_attribute(ERROR_REASON, reason)
    # The status name and reason only: a message could echo (cut short) what the caller sent.
    span.set_status(Status(StatusCode.ERROR, f"{code.name} {reason}".strip()))


def _annotated_unary(behavior: Callable[[Any, grpc.ServicerContext], Any]) -> Any:
    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        span = trace.get_current_span()
        if not span.is_recording():
            return behavior(request, context)
        _annotate_ids(span, request)
        fallback = grpc.StatusCode.OK
        try:
            response = behavior(request, context)
        except BaseException:
            fallback = grpc.StatusCode.UNKNOWN
            raise
        else:
            _annotate_ids(span, response)
            return response
        finally:
            _annotate_status(span, context, fallback)

    return handle


def _annotated_stream(behavior: Callable[[Any, grpc.ServicerContext], Iterator[Any]]) -> Any:
    def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        span = trace.get_current_span()
        if not span.is_recording():
            yield from behavior(request, context)
            return
        _annotate_ids(span, request)
        fallback = grpc.StatusCode.OK
        try:
            yield from behavior(request, context)
        except GeneratorExit:
            fallback = grpc.StatusCode.CANCELLED
            raise
        except BaseException:
            fallback = grpc.StatusCode.UNKNOWN
            raise
        finally:
            _annotate_status(span, context, fallback)

    return handle


class TracedRegistry:
    """A :class:`~delegation_service.domain.ports.TokenRegistry` decorator: one span per store call.

    Exceptions pass through unchanged (the caller still fails closed); the span records the
    exception's type, not its message.
    """

    def __init__(self, inner: TokenRegistry, tracer: trace.Tracer, system: str) -> None:
        self._inner = inner
        self._tracer = tracer
        self._system = system

    @property
    def inner(self) -> TokenRegistry:
        """The traced registry."""
        return self._inner

    @contextmanager
    def _span(self, operation: str, chain_id: str = "") -> Iterator[None]:
        if not trace.get_current_span().is_recording():
            yield
            return
        attributes = {"db.system.name": self._system, "db.operation.name": operation}
        if chain_id:
            attributes[CHAIN_ID] = chain_id
        with self._tracer.start_as_current_span(
            f"{self._system} {operation}",
            kind=SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield
            except Exception as error:
                span.set_attribute("error.type", type(error).__qualname__)
                span.set_status(Status(StatusCode.ERROR, type(error).__qualname__))
                raise

    def _call(self, operation: str, chain_id: str, call: Callable[[], _T]) -> _T:
        with self._span(operation, chain_id):
            return call()

    def snapshot(self, expected: TokenRecord) -> StateSnapshot:
        """See :meth:`TokenRegistry.snapshot`."""
        return self._call("snapshot", expected.chain_id, lambda: self._inner.snapshot(expected))

    def mint(self, root: TokenRecord, child: TokenRecord) -> MintOutcome:
        """See :meth:`TokenRegistry.mint`."""
        return self._call("mint", child.chain_id, lambda: self._inner.mint(root, child))

    def revoke_token(self, chain_id: str, token_id: str, expires_at: int, now: int) -> RevocationEvent:
        """See :meth:`TokenRegistry.revoke_token`."""
        return self._call(
            "revoke_token", chain_id, lambda: self._inner.revoke_token(chain_id, token_id, expires_at, now)
        )

    def revoke_chain(self, chain_id: str, expires_at: int, now: int) -> RevocationEvent:
        """See :meth:`TokenRegistry.revoke_chain`."""
        return self._call(
            "revoke_chain", chain_id, lambda: self._inner.revoke_chain(chain_id, expires_at, now)
        )

    def revoke_known_chain(self, chain_id: str, now: int, *, dry_run: bool = False) -> ChainRevocation | None:
        """See :meth:`TokenRegistry.revoke_known_chain`."""
        return self._call(
            "revoke_known_chain",
            chain_id,
            lambda: self._inner.revoke_known_chain(chain_id, now, dry_run=dry_run),
        )

    def revoke_horizon(self, key: HorizonKey, at: int, now: int) -> RevocationEvent:
        """See :meth:`TokenRegistry.revoke_horizon`."""
        return self._call("revoke_horizon", "", lambda: self._inner.revoke_horizon(key, at, now))

    def record(self, chain_id: str, token_id: str) -> TokenRecord | None:
        """See :meth:`TokenRegistry.record`."""
        return self._call("record", chain_id, lambda: self._inner.record(chain_id, token_id))

    def chain(self, chain_id: str, limit: int) -> ChainSnapshot | None:
        """See :meth:`TokenRegistry.chain`."""
        return self._call("chain", chain_id, lambda: self._inner.chain(chain_id, limit))

    def events(self, after: str | None, limit: int) -> Sequence[RevocationEvent]:
        """See :meth:`TokenRegistry.events`."""
        return self._call("events", "", lambda: self._inner.events(after, limit))

    def ping(self) -> bool:
        """See :meth:`TokenRegistry.ping`."""
        return self._call("ping", "", self._inner.ping)
