"""Consecutive wrapping interceptors run as one step, in the same order (transport/wrapping.py)."""

from __future__ import annotations

from typing import Any

import grpc

from delegation_service.transport.wrapping import Handler, WrappingChain, WrappingInterceptor, chained


class Tagging(WrappingInterceptor):
    """Wraps a unary handler so that its reply records this interceptor's name (outermost last)."""

    def __init__(self, name: str, only: str | None = None) -> None:
        super().__init__()
        self.name = name
        self.only = only

    def applies_to(self, method: str) -> bool:
        return self.only is None or method == self.only

    def wrap(self, handler: Handler, method: str) -> Handler:
        inner = handler.unary_unary
        assert inner is not None

        def tagged(request: Any, context: Any) -> list[str]:
            return [*inner(request, context), self.name]

        return grpc.unary_unary_rpc_method_handler(tagged)


class Other(grpc.ServerInterceptor):
    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        return continuation(handler_call_details)


class Details(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


def base() -> Handler:
    return grpc.unary_unary_rpc_method_handler(lambda request, context: [])


def test_runs_of_wrapping_interceptors_become_one_chain_and_others_keep_their_place() -> None:
    a, b, c, other = Tagging("a"), Tagging("b"), Tagging("c"), Other()
    grouped = chained([a, b, other, c])
    assert isinstance(grouped[0], WrappingChain) and grouped[1:] == [other, c]
    assert chained([a]) == [a]


def test_the_chain_wraps_as_grpc_would_the_first_outermost_and_skips_what_does_not_apply() -> None:
    chain = WrappingChain([Tagging("outer"), Tagging("only-b", only="/s/B"), Tagging("inner")])
    handler = base()
    wrapped_a = chain.intercept_service(lambda details: handler, Details("/s/A"))
    wrapped_b = chain.intercept_service(lambda details: handler, Details("/s/B"))
    assert wrapped_a is not None and wrapped_b is not None
    assert wrapped_a.unary_unary is not None and wrapped_b.unary_unary is not None
    assert wrapped_a.unary_unary(None, None) == ["inner", "outer"]  # type: ignore[arg-type]
    assert wrapped_b.unary_unary(None, None) == ["inner", "only-b", "outer"]  # type: ignore[arg-type]
    # Composed once per method: the same wrapper on the next call.
    assert chain.intercept_service(lambda details: handler, Details("/s/A")) is wrapped_a
