"""Bytes that are not the request message end as ``INVALID_ARGUMENT`` (``MALFORMED_REQUEST``), never INTERNAL.

grpcio deserializes a request before any interceptor's behaviour runs; when the generated ``FromString``
raises (corrupt wire format, invalid UTF-8 in a string field), grpcio logs a traceback and answers
INTERNAL. :class:`MalformedRequestInterceptor` swaps each method's request deserializer for one that
turns a :class:`DecodeError` into the :data:`MALFORMED` marker, and refuses a call that receives it
with the status of the one error table, logging one line. It applies to every method (health and
reflection too), and sits inside the metrics interceptor, which thus counts these refusals as well.

A malformed call is refused before the caller is admitted: nothing has been read from it, and the answer
says only that its bytes do not decode.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError

from delegation_service.domain.errors import MalformedRequest
from delegation_service.transport.errors import status_for
from delegation_service.transport.wrapping import Handler, WrappingInterceptor

log = logging.getLogger(__name__)


class _Malformed:
    """The type of :data:`MALFORMED`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MALFORMED"


MALFORMED = _Malformed()
"""What a wrapped deserializer returns for bytes that do not decode as the request message."""


def tolerant(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """``deserialize``, returning :data:`MALFORMED` instead of raising ``DecodeError``."""

    def deserialize_or_mark(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError:
            return MALFORMED

    return deserialize_or_mark


class MalformedRequestInterceptor(WrappingInterceptor):
    """Refuses requests that do not decode with ``INVALID_ARGUMENT``, for every kind of method."""

    def wrap(self, handler: Handler, method: str) -> Handler:
        """The handler with a tolerant deserializer and the marker check in front of its behaviour."""
        if handler.request_deserializer is None:
            return handler  # raw bytes in: nothing can fail to decode
        deserializer = tolerant(handler.request_deserializer)
        serializer = handler.response_serializer
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._single(handler.unary_unary, method), deserializer, serializer
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._single(handler.unary_stream, method), deserializer, serializer
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._many(handler.stream_unary, method), deserializer, serializer
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._many(handler.stream_stream, method), deserializer, serializer
            )
        return handler

    def _single(self, behavior: Callable[[Any, grpc.ServicerContext], Any], method: str) -> Any:
        # Not a generator: for a streaming response, the behaviour's own iterator is returned as it is.
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            if request is MALFORMED:
                _refuse(context, method)
            return behavior(request, context)

        return handle

    def _many(self, behavior: Callable[[Iterator[Any], grpc.ServicerContext], Any], method: str) -> Any:
        def handle(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            def checked() -> Iterator[Any]:
                for request in requests:
                    if request is MALFORMED:
                        _refuse(context, method)
                    yield request

            return behavior(checked(), context)

        return handle


def _refuse(context: grpc.ServicerContext, method: str) -> NoReturn:
    log.warning("malformed request", extra={"event": "malformed_request", "method": method})
    context.abort_with_status(status_for(MalformedRequest()))
    raise AssertionError("unreachable: abort_with_status raises")
