"""Hostile input to the OAuth port: whatever the body, parameters or headers, the answer is a definite
4xx with a JSON error (never a 500, never a traceback), within the size rules."""

from __future__ import annotations

import logging

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.oauth.conftest import OAuthService

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
PATHS = ("/oauth2/token", "/oauth2/introspect", "/oauth2/revoke")
FIELDS = (
    "grant_type",
    "subject_token",
    "subject_token_type",
    "audience",
    "scope",
    "resource",
    "dpop_jkt",
    "token",
    "requested_token_type",
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(PATHS), body=st.binary(max_size=512))
def test_any_body_gets_a_definite_answer(oauth_service: OAuthService, path: str, body: bytes) -> None:
    answer = requests.post(oauth_service.base_url + path, data=body, headers=FORM, timeout=5)
    assert answer.status_code in (200, 400, 401, 403)
    if answer.content:
        assert "error" in answer.json() or "active" in answer.json()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    form=st.dictionaries(st.sampled_from(FIELDS), st.text(max_size=300), max_size=6),
    proof=st.one_of(st.none(), st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789-_.", max_size=300)),
)
def test_any_form_gets_a_definite_small_answer(
    oauth_service: OAuthService, form: dict[str, str], proof: str | None
) -> None:
    headers = {**FORM, **({"DPoP": proof} if proof else {})}
    answer = requests.post(oauth_service.token_url, data=form, headers=headers, timeout=5)
    assert answer.status_code in (200, 400)
    assert len(answer.content) < 4096


def test_nothing_unexpected_is_logged(oauth_service: OAuthService, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        for body in (b"", b"=", b"&&&", b"a=%zz", b"\x00\xff", b"scope=%ff", b"x" * 1000):
            for path in PATHS:
                requests.post(oauth_service.base_url + path, data=body, headers=FORM, timeout=5)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
