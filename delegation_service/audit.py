"""The audit trail: one structured event per mint, refusal, revocation and operator action.

Events go to the ``delegation_service.audit`` logger (JSON lines with the rest of the log, easy to
route apart by logger name). Every event carries the same fields, empty when they do not apply:
``event``, ``outcome``, ``reason``, ``jti``, ``chain_id``, ``client_id``, ``bearer``, ``caller``.

One line per call: inside an RPC the access interceptor holds the call's audit event (:func:`hold`)
and writes it as that call's one line, on this logger, with the access line's fields added
(:mod:`delegation_service.transport.metrics`); outside one (the OAuth HTTP port, tests calling the
use cases) an event is written at once.

Never a token value or key material: fields are built from verified claims and identifiers, and, as a
second line of defence, every string is passed through :func:`redact`, which blanks anything shaped
like a JWT or a PEM block and caps the length (several fields, such as a requested ``client_id``, come
straight from the caller). Which fields may carry a caller's text depends on the call site (an
operator's chain id, an upstream ``jti``), so every string is checked; the check costs a few substring
scans for the common clean value, which is returned as it is.
"""

from __future__ import annotations

import hashlib
import logging
import re
from contextvars import ContextVar

from delegation_service.logs import emit

AUDIT_LOGGER = "delegation_service.audit"
JWT_SHAPED = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*")
"""A compact JWS/JWT: a base64url JSON object (``{"`` encodes to ``eyJ``) and two more segments."""
_PEM = re.compile(r"-----BEGIN [A-Z ]+-----.*?(?:-----END [A-Z ]+-----|$)", re.DOTALL)
MAX_FIELD_LENGTH = 256

_audit = logging.getLogger(AUDIT_LOGGER)

HeldEvent = tuple[str, dict[str, object]]
"""An audit event not yet written: its message and fields, redacted."""
_held: ContextVar[list[HeldEvent] | None] = ContextVar("held_audit_event", default=None)


def hold() -> list[HeldEvent]:
    """Hold the audit event the current call records, instead of writing it, in the returned list.

    The caller (the access interceptor) writes it with :func:`write_held` and ends the hold with
    :func:`release`. A second event in the same call writes the first at once, so at most one is held.
    """
    held: list[HeldEvent] = []
    _held.set(held)
    return held


def release() -> None:
    """End the hold of the current call (a plain ``set``, as :mod:`delegation_service.deadlines` does)."""
    _held.set(None)


def write_held(event: HeldEvent, more: dict[str, object]) -> None:
    """Write a held event, with ``more`` fields (the call's access fields) after its own."""
    message, fields = event
    for name, value in more.items():
        if name not in fields:
            fields[name] = value
    emit(_audit, logging.INFO, message, (), fields)


def redact(value: str) -> str:
    """``value`` with JWT-shaped and PEM-shaped parts replaced, control characters escaped, and capped.

    An over-long value keeps its start and gains a short hash, so events about one value still match.
    """
    if (
        len(value) <= MAX_FIELD_LENGTH
        and "eyJ" not in value
        and "-----BEGIN " not in value
        and value.isprintable()
    ):
        # The common case (ids, names, scopes), decided by a few substring scans: neither pattern can
        # match without its literal start, nothing needs escaping, nothing is too long.
        return value
    cleaned = _PEM.sub("[redacted-pem]", JWT_SHAPED.sub("[redacted-jwt]", value))
    if not cleaned.isprintable():
        cleaned = cleaned.encode("unicode_escape").decode("ascii")
    if len(cleaned) > MAX_FIELD_LENGTH:
        digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        cleaned = f"{cleaned[: MAX_FIELD_LENGTH - 24]}...[sha256:{digest}]"
    return cleaned


class AuditLog:
    """The :class:`~delegation_service.domain.ports.AuditSink` of the service: the audit logger."""

    def record(
        self,
        message: str,
        *,
        event: str,
        outcome: str,
        reason: str = "",
        jti: str = "",
        chain_id: str = "",
        client_id: str = "",
        bearer: str = "",
        caller: str = "",
        **fields: object,
    ) -> None:
        """Write one audit event. Extra ``fields`` are added as they are (strings redacted)."""
        if not _audit.isEnabledFor(logging.INFO):
            return  # nothing to redact for nobody
        extra: dict[str, object] = {
            "audit": True,
            "event": redact(event),
            "outcome": redact(outcome),
            "reason": redact(reason),
            "jti": redact(jti),
            "chain_id": redact(chain_id),
            "client_id": redact(client_id),
            "bearer": redact(bearer),
            "caller": redact(caller),
        }
        for name, value in fields.items():
            extra[name] = _clean(value)
        held = _held.get()
        if held is None:
            emit(_audit, logging.INFO, redact(message), (), extra)
            return
        if held:
            earlier, earlier_fields = held.pop()
            emit(_audit, logging.INFO, earlier, (), earlier_fields)
        held.append((redact(message), extra))


def _clean(value: object) -> object:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list | tuple):
        return [_clean(item) for item in value]
    return value
