"""JsonFormatter: the fast path writes exactly what a plain ``json.dumps`` of the record would."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from delegation_service.logs import _STANDARD, JsonFormatter, emit


def reference(record: logging.LogRecord, formatter: logging.Formatter) -> str:
    """The formatter's contract, written the slow and obvious way."""
    entry: dict[str, object] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z",
        "level": record.levelname.lower(),
        "logger": record.name,
        "message": record.getMessage(),
        **{k: v for k, v in vars(record).items() if k not in _STANDARD and v not in (None, "")},
    }
    if record.exc_info:
        entry["exception"] = formatter.formatException(record.exc_info)
    return json.dumps(entry, default=str, separators=(",", ":"))


def make(name: str, level: int, message: str, args: Any = (), extra: Any = None, exc: Any = None) -> Any:
    return logging.getLogger(name).makeRecord(name, level, "f.py", 1, message, args, exc, extra=extra)


class Opaque:
    def __str__(self) -> str:
        return "opaque"


CASES = [
    make(
        "delegation_service.access", logging.INFO, "rpc %s %s", ("Delegate", "OK"), {"code": "OK", "ms": 0.4}
    ),
    make("delegation_service.audit", logging.INFO, "delegate minted", (), {"audit": True, "dropped": []}),
    make("x", logging.WARNING, "no fields"),
    make("x.é", logging.ERROR, 'ünïcode \n\t"quoted" \u2028', (), {"ключ": "значение"}),
    make("x", logging.DEBUG, "%d%%", (5,), {"empty": "", "none": None, "zero": 0, "false": False}),
    make(
        "x",
        logging.INFO,
        "objects",
        (),
        {"obj": Opaque(), "nested": {"a": [1, None, "b"]}, "nan": float("nan")},
    ),
]


@pytest.mark.parametrize("record", CASES)
def test_each_line_is_the_plain_json_of_the_record(record: logging.LogRecord) -> None:
    formatter = JsonFormatter()
    assert formatter.format(record) == reference(record, formatter)
    assert formatter.format(record) == reference(record, formatter)  # again, from the caches


def test_exceptions_and_times_across_seconds() -> None:
    formatter = JsonFormatter()
    try:
        raise ValueError("boom")
    except ValueError:
        record = make("x", logging.ERROR, "failed", (), {"k": "v"}, sys.exc_info())
    assert formatter.format(record) == reference(record, formatter)
    assert json.loads(formatter.format(record))["exception"].endswith("ValueError: boom")
    for created in (0.0, 1.0005, 1.999, 1_800_000_000.25, 1_800_000_001.0):
        record = make("x", logging.INFO, "t")
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert formatter.format(record) == reference(record, formatter)


@settings(max_examples=200, deadline=None)
@given(
    name=st.text(min_size=1, max_size=20),
    message=st.text(max_size=40),
    extra=st.dictionaries(
        st.text(min_size=1, max_size=10).filter(lambda k: k not in _STANDARD),
        st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.lists(st.text(max_size=5)),
        max_size=6,
    ),
)
def test_any_record_formats_as_the_reference(name: str, message: str, extra: dict[str, Any]) -> None:
    formatter = JsonFormatter()
    record = make(name, logging.INFO, message.replace("%", "%%"), (), extra)
    line = formatter.format(record)
    assert line == reference(record, formatter)
    assert "\n" not in line


def test_emit_writes_the_line_logger_log_writes(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("delegation_service.test_emit")
    caplog.set_level(logging.INFO, logger=logger.name)
    fields: dict[str, object] = {"event": "rpc", "code": "OK", "duration_ms": 0.5}
    logger.info("rpc %s %s", "Delegate", "OK", extra=fields)
    emit(logger, logging.INFO, "rpc %s %s", ("Delegate", "OK"), fields)
    emit(logger, logging.DEBUG, "not shown", (), fields)
    logged, emitted = caplog.records
    formatter = JsonFormatter()
    emitted.created, emitted.msecs = logged.created, logged.msecs
    assert formatter.format(emitted) == formatter.format(logged)
    assert emitted.lineno == 0 and not emitted.funcName  # the caller is not looked up
