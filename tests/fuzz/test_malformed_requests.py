"""Regression: bytes that are not the request message are INVALID_ARGUMENT, never INTERNAL (SPEC §6).

Before the tolerant deserializers, grpcio answered INTERNAL with a traceback in the log for a corrupt
request, or a string field holding invalid UTF-8, on every method. Each method of the real server (both
services, health, reflection) is called here with both kinds of bytes over a real channel.
"""

from __future__ import annotations

import logging

import grpc
import pytest
from grpc_health.v1 import health_pb2

from delegation_service.client import error_details
from tests.fuzz.targets import RAW, RAW_METHODS, RawMethod, surface

CORRUPT = b"\xff\xff\xff"
"""A field key whose varint never ends: "wire format was corrupt"."""
INVALID_UTF8_FIELD_1 = b"\x0a\x02\xc3\x28"
"""Field 1, length-delimited, 2 bytes that are not UTF-8: every method tested has a string field 1."""

METHODS_WITH_STRING_FIELD_1 = [m for m in RAW_METHODS if not m.path.endswith(("/GetJwks", "/List"))]


def _send(method: RawMethod, data: bytes) -> None:
    channel = surface().channel
    if method.client_streaming:
        list(channel.stream_stream(method.path, **RAW)(iter([data]), timeout=10))
    elif method.server_streaming:
        list(channel.unary_stream(method.path, **RAW)(data, timeout=10))
    else:
        channel.unary_unary(method.path, **RAW)(data, timeout=10)


@pytest.mark.parametrize("data", [CORRUPT, INVALID_UTF8_FIELD_1], ids=["corrupt", "invalid-utf8"])
@pytest.mark.parametrize("method", METHODS_WITH_STRING_FIELD_1, ids=lambda m: m.path)
def test_undecodable_request_is_invalid_argument_with_one_log_line(
    method: RawMethod, data: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    surface()  # started before capturing: its start-up lines are not this call's
    caplog.clear()
    with caplog.at_level(logging.INFO), pytest.raises(grpc.RpcError) as caught:
        _send(method, data)
    details = error_details(caught.value)
    assert details.code is grpc.StatusCode.INVALID_ARGUMENT
    assert details.reason == "MALFORMED_REQUEST"
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    malformed = [r for r in caplog.records if r.getMessage() == "malformed request"]
    assert len(malformed) == 1 and "\n" not in malformed[0].getMessage()
    assert getattr(malformed[0], "method", None) == method.path


def test_health_list_answers_instead_of_unknown() -> None:
    channel = surface().channel
    # The health stubs predate List: the message exists at run time, not in types-grpcio-health-checking.
    response = health_pb2.HealthListResponse.FromString(  # type: ignore[attr-defined]
        channel.unary_unary("/grpc.health.v1.Health/List", **RAW)(b"", timeout=10)
    )
    assert "" in response.statuses
