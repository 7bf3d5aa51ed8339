"""MetricsInterceptor with fake contexts: codes, fallbacks, the access line, and what it caches."""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any, cast

import grpc
import pytest

from delegation_service.audit import AUDIT_LOGGER, AuditLog
from delegation_service.transport import metrics as metrics_module
from delegation_service.transport.metrics import DELEGATE_METHOD, MetricsInterceptor, ServiceMetrics

HEALTH_METHOD = "/grpc.health.v1.Health/Check"
WATCH_METHOD = "/delegation.v1.DelegationService/WatchRevocations"


class FakeContext:
    def __init__(self, code: grpc.StatusCode | None = None) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def peer(self) -> str:
        return "ipv4:127.0.0.1:5555"

    def trailing_metadata(self) -> tuple[()]:
        return ()


def context(code: grpc.StatusCode | None = None) -> grpc.ServicerContext:
    return cast(grpc.ServicerContext, FakeContext(code))


@dataclass
class Details:
    method: str
    invocation_metadata: tuple[()] = ()


@dataclass
class Response:
    access_token: str = ""
    client_id: str = ""
    token_id: str = ""
    chain_id: str = ""


def sample(metrics: ServiceMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def rpc_labels(method: str, kind: str = "UNARY") -> dict[str, str]:
    service, _, name = method.lstrip("/").rpartition("/")
    return {"grpc_type": kind, "grpc_service": service, "grpc_method": name}


def unary(behaviour: Any) -> grpc.RpcMethodHandler[Any, Any]:
    return grpc.unary_unary_rpc_method_handler(behaviour)


def test_the_wrapped_handler_is_built_once_per_method() -> None:
    interceptor = MetricsInterceptor(ServiceMetrics(process_metrics=False))
    handler = unary(lambda request, context: Response())
    first = interceptor.intercept_service(lambda _: handler, Details(DELEGATE_METHOD))  # type: ignore[arg-type]
    again = interceptor.intercept_service(lambda _: handler, Details(DELEGATE_METHOD))  # type: ignore[arg-type]
    assert first is again is not handler
    other = unary(lambda request, context: Response())
    assert interceptor.intercept_service(lambda _: other, Details(DELEGATE_METHOD)) is not first  # type: ignore[arg-type]
    assert interceptor.intercept_service(lambda _: None, Details("/no.Such/Method")) is None  # type: ignore[arg-type]


def test_codes_outcomes_and_the_access_line(caplog: pytest.LogCaptureFixture) -> None:
    metrics = ServiceMetrics(process_metrics=False)
    interceptor = MetricsInterceptor(metrics)
    responses = iter(
        [
            Response(access_token="t", client_id="billing", token_id="j1", chain_id="c1"),
            Response(access_token="t", client_id="billing", token_id="j2", chain_id="c1"),
            Response(),  # validate_only
            Response(),  # refused: the handler's return value does not count once the code is set
        ]
    )
    handler = interceptor.intercept_service(
        lambda _: unary(lambda request, context: next(responses)),
        Details(DELEGATE_METHOD),  # type: ignore[arg-type]
    )
    assert handler is not None and handler.unary_unary is not None
    caplog.set_level(logging.INFO, logger="delegation_service.access")
    for _ in range(3):
        handler.unary_unary(None, context())
    handler.unary_unary(None, context(grpc.StatusCode.PERMISSION_DENIED))  # an abort set the code
    labels = rpc_labels(DELEGATE_METHOD)
    assert sample(metrics, "grpc_server_started_total", **labels) == 4
    assert sample(metrics, "grpc_server_handled_total", **labels, grpc_code="OK") == 3
    assert sample(metrics, "grpc_server_handled_total", **labels, grpc_code="PERMISSION_DENIED") == 1
    assert sample(metrics, "grpc_server_handling_seconds_count", **labels) == 4
    assert sample(metrics, "delegation_tokens_issued_total", client_id="billing") == 2
    assert sample(metrics, "delegation_delegations_validated_total") == 1
    assert sample(metrics, "delegation_tokens_denied_total", reason="PERMISSION_DENIED") == 1
    lines = [r for r in caplog.records if r.name == "delegation_service.access"]
    assert [(r.getMessage(), getattr(r, "jti", None), getattr(r, "chain_id", None)) for r in lines] == [
        ("rpc Delegate OK", "j1", "c1"),
        ("rpc Delegate OK", "j2", "c1"),
        ("rpc Delegate OK", None, None),
        ("rpc Delegate PERMISSION_DENIED", None, None),
    ]
    assert all(r.peer == "ipv4:127.0.0.1:5555" and r.duration_ms >= 0 for r in lines)  # type: ignore[attr-defined]


def audited_delegate(events: int) -> grpc.RpcMethodHandler[Any, Any]:
    """A Delegate handler whose use case records ``events`` audit events, as the service's do."""
    audit = AuditLog()

    def behaviour(request: Any, context: Any) -> Response:
        for index in range(events):
            audit.record(f"delegate minted {index}", event="delegate", outcome="minted", jti=f"j{index}")
        return Response(access_token="t", client_id="billing", token_id="j1", chain_id="c1")

    interceptor = MetricsInterceptor(ServiceMetrics(process_metrics=False))
    handler = interceptor.intercept_service(lambda _: unary(behaviour), Details(DELEGATE_METHOD))  # type: ignore[arg-type]
    assert handler is not None
    return handler


def lines_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name in ("delegation_service.access", AUDIT_LOGGER)]


def test_an_audited_call_writes_one_line_its_audit_event_with_the_access_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    handler = audited_delegate(1)
    assert handler.unary_unary is not None
    handler.unary_unary(None, context())
    (line,) = lines_of(caplog)
    assert line.name == AUDIT_LOGGER and line.getMessage() == "delegate minted 0"
    fields = vars(line)
    assert (fields["event"], fields["outcome"], fields["jti"], fields["chain_id"]) == (
        "delegate",
        "minted",
        "j0",
        "",
    )
    assert (fields["method"], fields["code"], fields["peer"]) == (
        DELEGATE_METHOD,
        "OK",
        "ipv4:127.0.0.1:5555",
    )
    assert fields["duration_ms"] >= 0 and fields["audit"] is True
    # Outside a call (no interceptor holding it) an event is written at once, without access fields.
    AuditLog().record("revoke", event="revoke", outcome="revoked")
    assert not hasattr(lines_of(caplog)[-1], "method")


def test_a_second_audit_event_writes_the_first_and_the_access_logger_off_keeps_the_audit_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    handler = audited_delegate(2)
    assert handler.unary_unary is not None
    handler.unary_unary(None, context())
    assert [(r.getMessage(), hasattr(r, "method")) for r in lines_of(caplog)] == [
        ("delegate minted 0", False),
        ("delegate minted 1", True),
    ]
    access, audit = logging.getLogger("delegation_service.access"), logging.getLogger(AUDIT_LOGGER)
    try:
        caplog.clear()
        access.setLevel(logging.WARNING)
        handler.unary_unary(None, context())
        assert [(r.name, hasattr(r, "method")) for r in lines_of(caplog)] == [(AUDIT_LOGGER, False)] * 2
        caplog.clear()
        access.setLevel(logging.INFO)
        audit.setLevel(logging.WARNING)
        handler.unary_unary(None, context())
        assert [(r.name, r.getMessage()) for r in lines_of(caplog)] == [
            ("delegation_service.access", "rpc Delegate OK")
        ]
    finally:
        access.setLevel(logging.NOTSET)
        audit.setLevel(logging.NOTSET)


def test_a_raising_handler_counts_as_unknown_and_health_logs_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = ServiceMetrics(process_metrics=False)
    interceptor = MetricsInterceptor(metrics)

    def boom(request: Any, context: Any) -> Any:
        raise RuntimeError("boom")

    handler = interceptor.intercept_service(lambda _: unary(boom), Details(HEALTH_METHOD))  # type: ignore[arg-type]
    assert handler is not None and handler.unary_unary is not None
    caplog.set_level(logging.INFO, logger="delegation_service.access")
    with pytest.raises(RuntimeError):
        handler.unary_unary(None, context())
    assert sample(metrics, "grpc_server_handled_total", **rpc_labels(HEALTH_METHOD), grpc_code="UNKNOWN") == 1
    assert not [r for r in caplog.records if r.name == "delegation_service.access"]  # DEBUG, not shown


def test_a_stream_closed_early_counts_as_cancelled() -> None:
    metrics = ServiceMetrics(process_metrics=False)
    interceptor = MetricsInterceptor(metrics)

    def events(request: Any, context: Any) -> Iterator[int]:
        yield from range(10)

    handler = interceptor.intercept_service(
        lambda _: grpc.unary_stream_rpc_method_handler(events),
        Details(WATCH_METHOD),  # type: ignore[arg-type]
    )
    assert handler is not None and handler.unary_stream is not None
    stream = cast(Generator[int, None, None], handler.unary_stream(None, context()))
    assert next(stream) == 0
    stream.close()
    labels = rpc_labels(WATCH_METHOD, "SERVER_STREAMING")
    assert sample(metrics, "grpc_server_handled_total", **labels, grpc_code="CANCELLED") == 1
    assert list(handler.unary_stream(None, context())) == list(range(10))
    assert sample(metrics, "grpc_server_handled_total", **labels, grpc_code="OK") == 1


def test_label_children_caches_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "MAX_LABEL_CHILDREN", 3)
    metrics = ServiceMetrics(process_metrics=False)
    cache: dict[str, Any] = {}
    for i in range(10):
        child = metrics_module._child(cache, f"client-{i}", metrics.tokens_issued, f"client-{i}")
        assert cache[f"client-{i}"] is child is metrics.tokens_issued.labels(f"client-{i}")
        assert len(cache) <= 3


def test_messages_are_counted_as_the_handler_reads_and_returns_them() -> None:
    metrics = ServiceMetrics(process_metrics=False)
    interceptor = MetricsInterceptor(metrics)
    upload = "/test.Upload/Send"

    def count(requests: Iterator[int], context: Any) -> int:
        return sum(1 for _ in requests)

    handler = interceptor.intercept_service(
        lambda _: grpc.stream_unary_rpc_method_handler(count),
        Details(upload),  # type: ignore[arg-type]
    )
    assert handler is not None and handler.stream_unary is not None
    assert handler.stream_unary(iter(range(3)), context()) == 3
    labels = rpc_labels(upload, "CLIENT_STREAMING")
    assert sample(metrics, "grpc_server_msg_received_total", **labels) == 3
    assert sample(metrics, "grpc_server_msg_sent_total", **labels) == 1
    # A unary method has no open-streams series at all.
    unary_handler = interceptor.intercept_service(
        lambda _: unary(lambda request, context: Response()),
        Details(DELEGATE_METHOD),  # type: ignore[arg-type]
    )
    assert unary_handler is not None and unary_handler.unary_unary is not None
    unary_handler.unary_unary(None, context())
    assert metrics.registry.get_sample_value("grpc_server_open_streams", rpc_labels(DELEGATE_METHOD)) is None
