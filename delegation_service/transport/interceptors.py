"""One server interceptor around every method of ``delegation.v1``.

It admits each call through the caller gate (:mod:`.authz`: who is calling, may they make this call),
records the caller for the audit log, and turns every exception into a
status: domain errors through the one table in :mod:`.errors`, anything unexpected into a bare INTERNAL
(the traceback goes to the log, never to the caller). It also publishes the call's deadline
(:mod:`delegation_service.deadlines`), so that no store wait outlasts the caller, admission included
(an introspection credential that is a JWT is checked against the store too).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from delegation_service.deadlines import call_deadline
from delegation_service.domain.errors import DelegationError
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
