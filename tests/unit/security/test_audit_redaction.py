"""audit.redact: the second line of defence that keeps tokens and keys out of the audit log."""

from __future__ import annotations

import hashlib
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from delegation_service.audit import _PEM, AUDIT_LOGGER, JWT_SHAPED, MAX_FIELD_LENGTH, AuditLog, redact

TOKEN = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("billing", "billing"),
        (TOKEN, "[redacted-jwt]"),
        (f"because {TOKEN} leaked", "because [redacted-jwt] leaked"),
        ("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "[redacted-jwt]"),  # unsigned, too
        ("-----BEGIN PRIVATE KEY-----\nMIGHAgEA\n-----END PRIVATE KEY-----", "[redacted-pem]"),
        ("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE", "[redacted-pem]"),  # even cut short
        ("a\nlevel=admin", "a\\nlevel=admin"),  # no forged log lines
    ],
)
def test_redact(value: str, expected: str) -> None:
    assert redact(value) == expected


def test_long_values_are_capped_with_a_hash_so_events_still_match() -> None:
    long = "x" * 10_000
    assert len(redact(long)) <= MAX_FIELD_LENGTH
    assert redact(long) == redact(long) != redact(long + "y")


def test_record_writes_every_agreed_field_and_redacts_extras(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    AuditLog().record("delegate denied", event="delegate", outcome="denied", client_id=TOKEN, note=[TOKEN, 3])
    (event,) = caplog.records
    assert (event.event, event.outcome, event.reason, event.jti, event.caller) == (  # type: ignore[attr-defined]
        "delegate",
        "denied",
        "",
        "",
        "",
    )
    assert event.client_id == "[redacted-jwt]"  # type: ignore[attr-defined]
    assert event.note == ["[redacted-jwt]", 3]  # type: ignore[attr-defined]
    assert not JWT_SHAPED.search(event.getMessage())


def _redact_slowly(value: str) -> str:
    """redact without its fast path: the patterns always run."""
    cleaned = _PEM.sub("[redacted-pem]", JWT_SHAPED.sub("[redacted-jwt]", value))
    if not cleaned.isprintable():
        cleaned = cleaned.encode("unicode_escape").decode("ascii")
    if len(cleaned) > MAX_FIELD_LENGTH:
        digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        cleaned = f"{cleaned[: MAX_FIELD_LENGTH - 24]}...[sha256:{digest}]"
    return cleaned


_pieces = st.sampled_from(
    ["eyJ", "eyJhbGciOiJub25lIn0", ".", "-", "_", "-----BEGIN ", "KEY-----", "\n", "\x00", "a", "é", " "]
)


@settings(max_examples=500, deadline=None)
@given(value=st.text(max_size=300) | st.lists(_pieces, max_size=80).map("".join))
def test_the_fast_path_changes_nothing(value: str) -> None:
    assert redact(value) == _redact_slowly(value)


def test_record_redacts_every_agreed_field_and_the_message(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    names = ("event", "outcome", "reason", "jti", "chain_id", "client_id", "bearer", "caller")
    AuditLog().record(f"msg {TOKEN}", **dict.fromkeys(names, TOKEN), extra=(TOKEN,))
    (event,) = caplog.records
    assert [getattr(event, name) for name in names] == ["[redacted-jwt]"] * len(names)
    assert event.extra == ["[redacted-jwt]"]  # type: ignore[attr-defined]
    assert event.getMessage() == "msg [redacted-jwt]"


def test_record_does_nothing_when_the_audit_logger_is_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=AUDIT_LOGGER)
    AuditLog().record("delegate minted", event="delegate", outcome="minted")
    assert not caplog.records
