"""The server interceptors around every method of ``delegation.v1``.

:class:`ErrorAndAuthInterceptor` admits each call through the caller gate (:mod:`.authz`: who is
calling, may they make this call), records the caller for the audit log, and turns every exception into a
status: domain errors through the one table in :mod:`.errors`, anything unexpected into a bare INTERNAL
(the traceback goes to the log, never to the caller).

:class:`DrainInterceptor` counts the calls in flight, so shutdown can wait for them, and answers the
calls that arrive once shutdown refuses new ones with UNAVAILABLE (``SERVER_DRAINING``), never leaving
them for grpc to cancel.

:class:`ErrorAndAuthInterceptor` also publishes the call's deadline (:mod:`delegation_service.deadlines`),
so that no store wait outlasts the caller, admission included (an introspection credential that is a
JWT is checked against the store too).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from delegation_service.deadlines import call_deadline
from delegation_service.domain.errors import DelegationError, ServerDraining
from delegation_service.transport.auth import CallerGate, set_caller
from delegation_service.transport.errors import internal_status, status_for
from delegation_service.transport.wrapping import Handler, WrappingInterceptor

log = logging.getLogger(__name__)

PACKAGE_PREFIX = "/delegation.v1."


class ErrorAndAuthInterceptor(WrappingInterceptor):
    """Wraps each ``delegation.v1`` handler; health and reflection pass through untouched."""

    def __init__(self, gate: CallerGate) -> None:
        super().__init__()
        self._gate = gate

    def applies_to(self, method: str) -> bool:
        """Only ``delegation.v1`` methods: health and reflection pass through untouched."""
        return method.startswith(PACKAGE_PREFIX)

    def wrap(self, handler: Handler, method: str) -> Handler:
        """The handler with admission and error translation around it."""
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _enter(self, context: grpc.ServicerContext, method: str) -> None:
        set_caller(self._gate.admit(method, context))

    def _unary(self, behavior: Callable[[Any, grpc.ServicerContext], Any], method: str) -> Any:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                with call_deadline(context.time_remaining()):
                    self._enter(context, method)
                    return behavior(request, context)
            except DelegationError as error:
                status = status_for(error)
            except Exception:
                log.exception("unexpected failure in %s", method)
                status = internal_status()
            context.abort_with_status(status)
            return None  # unreachable: abort_with_status raises

        return handle

    def _stream(self, behavior: Callable[[Any, grpc.ServicerContext], Iterator[Any]], method: str) -> Any:
        def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                with call_deadline(context.time_remaining()):
                    self._enter(context, method)
                    yield from behavior(request, context)
                return
            except DelegationError as error:
                status = status_for(error)
            except Exception:
                log.exception("unexpected failure in %s", method)
                status = internal_status()
            context.abort_with_status(status)

        return handle


class DrainInterceptor(WrappingInterceptor):
    """Counts ``delegation.v1`` calls in flight; refuses new ones once told to; ends drained streams.

    It runs outside :class:`ErrorAndAuthInterceptor`, so a refusal costs no authentication, and its
    abort is not mistaken for an unexpected failure. Health and reflection pass through: health must go
    on answering NOT_SERVING while the server drains.
    """

    def __init__(self, draining: threading.Event) -> None:
        super().__init__()
        self._draining = draining
        self._lock = threading.Condition()
        self._in_flight = 0
        self._refusing = False

    @property
    def in_flight(self) -> int:
        """Calls admitted and not yet finished."""
        with self._lock:
            return self._in_flight

    def refuse_new_calls(self) -> None:
        """From now on every new call is answered UNAVAILABLE (``SERVER_DRAINING``)."""
        with self._lock:
            self._refusing = True

    def wait_idle(self, timeout: float) -> bool:
        """Block until no admitted call is in flight, or ``timeout`` seconds; whether it is idle."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
            return True

    def applies_to(self, method: str) -> bool:
        """Only ``delegation.v1`` methods: health and reflection are never refused."""
        return method.startswith(PACKAGE_PREFIX)

    def wrap(self, handler: Handler, method: str) -> Handler:
        """The handler with admission counting around it."""
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _admit(self) -> bool:
        with self._lock:
            if self._refusing:
                return False
            self._in_flight += 1
            return True

    def _release(self) -> None:
        with self._lock:
            self._in_flight -= 1
            if not self._in_flight:
                self._lock.notify_all()

    def _unary(self, behavior: Callable[[Any, grpc.ServicerContext], Any]) -> Any:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            if not self._admit():
                context.abort_with_status(status_for(ServerDraining()))
            try:
                return behavior(request, context)
            finally:
                self._release()

        return handle

    def _stream(self, behavior: Callable[[Any, grpc.ServicerContext], Iterator[Any]]) -> Any:
        def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            if not self._admit():
                context.abort_with_status(status_for(ServerDraining()))
            try:
                yield from behavior(request, context)
            finally:
                self._release()
            if self._draining.is_set():
                # A follower's stream only ends by itself on shutdown: say so with a status it resumes
                # from (its last cursor, on another server), not a clean end it might take as final.
                context.abort_with_status(status_for(ServerDraining()))

        return handle
