"""Logging: JSON lines for machines (the default), a short human format for the dev server.

Structured fields travel in ``extra={...}``; nothing here ever formats a token.

Every RPC writes one line (its access line, or its audit event with the access fields:
:mod:`delegation_service.audit`), so the JSON formatter is on the hot path: the parts that never change
per logger and level are encoded once, the time prefix once per second, and the rest in one pass of an
encoder built once (the C encoder itself, not a ``JSONEncoder`` that builds a new one per line).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from json.encoder import encode_basestring_ascii
from typing import Any

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}

# One encoder for every line: ``json.dumps`` with options builds a new encoder per call, and even a kept
# ``JSONEncoder`` builds a new C encoder per ``encode``. Built once here, without the circular-reference
# check (its state would be per call; log fields are never cyclic, and a cycle still fails, as a
# RecursionError the handler reports instead of a ValueError).
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)


def _fast_encoder() -> Callable[[dict[str, object]], str]:
    make: Any = getattr(json.encoder, "c_make_encoder", None)  # the type stubs leave it out
    if make is None:  # an interpreter without the C accelerator
        return _ENCODER.encode
    chunks = make(None, str, encode_basestring_ascii, None, ":", ",", False, False, True)
    return lambda fields: "".join(chunks(fields, 0))


_encode_fields = _fast_encoder()
_MAX_CACHED_LOGGERS = 1024


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and v is not None and v != ""}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the structured fields."""

    def __init__(self) -> None:
        super().__init__()
        self._second: tuple[int, str] = (-1, "")
        self._static: dict[tuple[str, str], str] = {}

    def format(self, record: logging.LogRecord) -> str:
        """Render one record."""
        second = int(record.created)
        cached = self._second  # one read: another thread may replace it meanwhile, never half of it
        if cached[0] != second:
            cached = (second, '{"time":"' + time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
            self._second = cached
        static = self._static.get((record.levelname, record.name))
        if static is None:
            static = self._static_part(record)
        fields = _fields(record)
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        head = f'{cached[1]}.{int(record.msecs):03d}Z",{static}{encode_basestring_ascii(record.getMessage())}'
        if not fields:
            return head + "}"
        return head + "," + _encode_fields(fields)[1:]

    def _static_part(self, record: logging.LogRecord) -> str:
        """``"level":...,"logger":...,"message":`` for one logger and level, encoded once."""
        static = (
            f'"level":{encode_basestring_ascii(record.levelname.lower())},'
            f'"logger":{encode_basestring_ascii(record.name)},"message":'
        )
        if len(self._static) >= _MAX_CACHED_LOGGERS:
            self._static.clear()  # bounded, whatever names loggers get
        self._static[(record.levelname, record.name)] = static
        return static


class HumanFormatter(logging.Formatter):
    """``HH:MM:SS level message key=value ...`` for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        """Render one record."""
        fields = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{time.strftime('%H:%M:%S', time.localtime(record.created))} {record.levelname.lower():7} "
        line += f"{record.getMessage()} {fields}".rstrip()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def emit(
    logger: logging.Logger, level: int, message: str, args: tuple[object, ...], fields: dict[str, object]
) -> None:
    """``logger.log(level, message, *args, extra=fields)`` for the lines written on every call.

    The same record, minus the caller's file and line (which no formatter here prints): ``Logger.log``
    walks the stack to find them, a cost paid twice per RPC for nothing.
    """
    if logger.isEnabledFor(level):
        logger.handle(
            logger.makeRecord(logger.name, level, "(unknown file)", 0, message, args, None, None, fields)
        )


def configure(level: str, human: bool = False) -> None:
    """Send every log line to stdout in the chosen format."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(HumanFormatter() if human else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
