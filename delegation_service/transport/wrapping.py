"""The base of the service's interceptors: wrap each method's handler once, then reuse the wrapper.

The server hands out the same handler object for a method on every call, and building a wrapped
handler per call costs on the hot path; so each interceptor wraps a method's handler the first time it
is seen and keeps the result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import grpc

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"

MAX_CACHED_METHODS = 256
"""Wrapped handlers kept by method name (only methods the server has a handler for ever get here)."""


class WrappingInterceptor(grpc.ServerInterceptor):
    """Calls :meth:`wrap` once per method it :meth:`applies_to`; other methods pass through."""

    def __init__(self) -> None:
        self._handlers: dict[str, tuple[Handler, Handler]] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        """The method's handler, wrapped (the same wrapper every time)."""
        handler = continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or not self.applies_to(method):
            return handler
        cached = self._handlers.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self.wrap(handler, method)
        if len(self._handlers) >= MAX_CACHED_METHODS:
            self._handlers.clear()
        self._handlers[method] = (handler, wrapped)
        return wrapped

    def applies_to(self, method: str) -> bool:
        """Whether calls to ``method`` are wrapped (all, unless a subclass says otherwise)."""
        return True

    def wrap(self, handler: Handler, method: str) -> Handler:
        """The wrapped handler of ``method``."""
        raise NotImplementedError


class WrappingChain(WrappingInterceptor):
    """Several wrapping interceptors as one, in the same order (the first is the outermost).

    grpc runs each interceptor of a server as a step of a Python pipeline on every call, wrapped
    handlers cached or not: five of them were a tenth of a Delegate's Python time in the bench profile
    (``_ServicePipeline._continuation``). Composed once per method here, a call pays one step.
    """

    def __init__(self, interceptors: Sequence[WrappingInterceptor]) -> None:
        super().__init__()
        self._inner = tuple(interceptors)

    def wrap(self, handler: Handler, method: str) -> Handler:
        for interceptor in reversed(self._inner):
            if interceptor.applies_to(method):
                handler = interceptor.wrap(handler, method)
        return handler


def chained(interceptors: Sequence[grpc.ServerInterceptor]) -> list[grpc.ServerInterceptor]:
    """``interceptors`` with each run of consecutive wrapping interceptors made one :class:`WrappingChain`
    (the others, e.g. OpenTelemetry's, stay where they are)."""
    result: list[grpc.ServerInterceptor] = []
    run: list[WrappingInterceptor] = []
    for interceptor in (*interceptors, None):
        if isinstance(interceptor, WrappingInterceptor):
            run.append(interceptor)
            continue
        if run:
            result.append(run[0] if len(run) == 1 else WrappingChain(run))
            run = []
        if interceptor is not None:
            result.append(interceptor)
    return result
