"""audit.redact: the second line of defence that keeps tokens and keys out of the audit log."""

from __future__ import annotations

import logging

import pytest

from delegation_service.audit import AUDIT_LOGGER, JWT_SHAPED, MAX_FIELD_LENGTH, record, redact

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
    record("delegate denied", event="delegate", outcome="denied", client_id=TOKEN, note=[TOKEN, 3])
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
