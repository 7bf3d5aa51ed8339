"""The OAuth face over HTTP, through authlib's OAuth 2 client (an implementation we did not write):
RFC 8693 token exchange, RFC 7662 introspection, RFC 7009 revocation, RFC 8414 metadata, audience
narrowing; children verified with joserfc against the JWKS the metadata names."""

from __future__ import annotations

import base64
import json
import logging

import pytest
import requests
from authlib.integrations.base_client.errors import OAuthError
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.oauth.conftest import ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE, OAuthService

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def post(service: OAuthService, path: str, data: dict[str, str] | str, **headers: str) -> requests.Response:
    return requests.post(service.base_url + path, data=data, headers={**FORM, **headers}, timeout=5)


def test_token_exchange_through_authlib_mints_a_child_joserfc_verifies(oauth_service: OAuthService) -> None:
    metadata = requests.get(
        oauth_service.base_url + "/.well-known/oauth-authorization-server", timeout=5
    ).json()
    assert metadata["token_endpoint"] == oauth_service.token_url
    assert metadata["grant_types_supported"] == [TOKEN_EXCHANGE]
    assert metadata["token_endpoint_auth_methods_supported"] == ["none"]

    with oauth_service.session() as session:
        token = session.fetch_token(
            metadata["token_endpoint"],
            grant_type=TOKEN_EXCHANGE,
            subject_token=oauth_service.parent(),
            subject_token_type=ACCESS_TOKEN_TYPE,
            audience="billing",
            scope="warehouse.items.r",
        )

    assert token["token_type"] == "Bearer"
    assert token["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert token["scope"] == "warehouse.items.r"
    assert 0 < token["expires_in"] <= 900
    keys = KeySet.import_key_set(requests.get(metadata["jwks_uri"], timeout=5).json())
    claims = jwt.decode(token["access_token"], keys).claims
    assert claims["client_id"] == "billing"
    assert claims["act"] == {"sub": "gateway"}
    assert "cnf" not in claims


@pytest.mark.parametrize(
    ("extra", "error", "reason"),
    [
        ({"scope": "warehouse.items.rwx"}, "invalid_scope", "INVALID_SCOPE_STRUCTURE"),
        ({"scope": "directory.person.rw"}, "invalid_scope", "SCOPE_NOT_ALLOWED_FOR_CLIENT"),
        ({"scope": "directory.delegations.rw"}, "invalid_scope", "DELEGATION_ACCESS_TOKEN_CANNOT_DELEGATE"),
        ({"audience": "nobody"}, "invalid_target", "UNKNOWN_CLIENT"),
        ({"subject_token": "not-a-token"}, "invalid_grant", "INVALID_PARENT_TOKEN"),
        ({"subject_token_type": "urn:x"}, "invalid_request", "INVALID_REQUEST"),
        (
            {"requested_token_type": "urn:ietf:params:oauth:token-type:id_token"},
            "invalid_request",
            "INVALID_REQUEST",
        ),
        ({"grant_type": "client_credentials"}, "unsupported_grant_type", "UNSUPPORTED_GRANT_TYPE"),
        ({"actor_token": "x"}, "invalid_request", "INVALID_REQUEST"),
        ({"resource": "directory", "scope": "warehouse.items.r"}, "invalid_scope", "SCOPE_OUTSIDE_AUDIENCE"),
        ({"resource": "elsewhere"}, "invalid_target", "AUDIENCE_NOT_GRANTED"),
    ],
)
def test_refusals_are_rfc_6749_errors_with_our_reason(
    oauth_service: OAuthService, extra: dict[str, str], error: str, reason: str
) -> None:
    answer = post(
        oauth_service, "/oauth2/token", oauth_service.exchange_form(oauth_service.parent(), **extra)
    )

    body = answer.json()
    assert answer.status_code == 400
    assert (body["error"], body["reason"]) == (error, reason)
    assert body["error_description"]
    assert answer.headers["Cache-Control"] == "no-store"


def test_authlib_raises_the_oauth_error(oauth_service: OAuthService) -> None:
    with oauth_service.session() as session, pytest.raises(OAuthError) as raised:
        session.fetch_token(
            oauth_service.token_url,
            grant_type=TOKEN_EXCHANGE,
            subject_token=oauth_service.parent(),
            subject_token_type=ACCESS_TOKEN_TYPE,
            audience="billing",
            scope="directory.person.rw",
        )
    assert raised.value.error == "invalid_scope"


def test_malformed_requests(oauth_service: OAuthService) -> None:
    form = oauth_service.exchange_form(oauth_service.parent())
    body = "&".join(f"{k}={v}" for k, v in form.items())

    repeated = post(oauth_service, "/oauth2/token", body + "&audience=search").json()
    assert (repeated["error"], repeated["violations"][0]["field"]) == ("invalid_request", "audience")
    in_url = requests.post(oauth_service.token_url + "?" + body, data="", headers=FORM, timeout=5)
    assert in_url.json()["error"] == "invalid_request"
    as_json = requests.post(oauth_service.token_url, json=form, timeout=5)
    assert as_json.status_code == 415
    too_big = post(oauth_service, "/oauth2/token", body + "&padding=" + "x" * 70_000)
    assert too_big.status_code == 413
    not_utf8 = requests.post(oauth_service.token_url, data=b"scope=\xff", headers=FORM, timeout=5)
    assert not_utf8.json()["error"] == "invalid_request"
    assert requests.get(oauth_service.base_url + "/oauth2/token", timeout=5).status_code == 404
    assert requests.put(oauth_service.token_url, data="", headers=FORM, timeout=5).status_code == 405


def test_an_error_stays_small_and_never_echoes_a_token(oauth_service: OAuthService) -> None:
    parent = oauth_service.parent()
    scopes = " ".join(f"warehouse.nope{i:04d}.r" for i in range(90)) + " " + parent
    answer = post(oauth_service, "/oauth2/token", oauth_service.exchange_form(parent, scope=scopes))

    body = answer.json()
    assert answer.status_code == 400 and body["error"] == "invalid_scope"
    assert len(answer.content) < 4096
    assert body["omitted_violations"] > 0
    assert parent not in answer.text


def test_introspection_needs_a_caller_and_answers_rfc_7662(oauth_service: OAuthService) -> None:
    with oauth_service.session() as session:
        child = session.fetch_token(
            oauth_service.token_url,
            grant_type=TOKEN_EXCHANGE,
            subject_token=oauth_service.parent(),
            subject_token_type=ACCESS_TOKEN_TYPE,
            audience="billing",
            scope="warehouse.items.r",
        )["access_token"]
        url = oauth_service.base_url + "/oauth2/introspect"
        anonymous = session.introspect_token(url, token=child)
        known = session.introspect_token(
            url, token=child, headers={"Authorization": f"Bearer {oauth_service.operator_secret}"}
        )

    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "invalid_client"
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    claims = known.json()
    assert claims["active"] is True
    assert (claims["client_id"], claims["scope"], claims["aud"]) == (
        "billing",
        "warehouse.items.r",
        "warehouse",
    )
    assert claims["act"] == {"sub": "gateway"} and claims["token_type"] == "Bearer"


def test_revocation_through_authlib_then_introspection_says_inactive(oauth_service: OAuthService) -> None:
    auth = {"Authorization": f"Bearer {oauth_service.operator_secret}"}
    with oauth_service.session() as session:
        child = session.fetch_token(
            oauth_service.token_url,
            grant_type=TOKEN_EXCHANGE,
            subject_token=oauth_service.parent(),
            subject_token_type=ACCESS_TOKEN_TYPE,
            audience="search",
        )["access_token"]
        revoked = session.revoke_token(oauth_service.base_url + "/oauth2/revoke", token=child)
        garbage = session.revoke_token(oauth_service.base_url + "/oauth2/revoke", token="garbage")
        after = session.introspect_token(
            oauth_service.base_url + "/oauth2/introspect", token=child, headers=auth
        )

    assert (revoked.status_code, garbage.status_code) == (200, 200)
    assert after.json() == {"active": False}
    assert oauth_service.grpc().introspect(child).active is False


def test_audience_narrowing_limits_the_child_to_one_resource_server(oauth_service: OAuthService) -> None:
    answer = post(
        oauth_service,
        "/oauth2/token",
        oauth_service.exchange_form(oauth_service.parent(), resource="warehouse"),
    )

    token = answer.json()
    assert answer.status_code == 200, token
    assert token["scope"] == "warehouse.items.rw"  # billing's directory.person.r is left out
    introspected = oauth_service.grpc().introspect(token["access_token"])
    assert list(introspected.audiences) == ["warehouse"]


def test_admin_metadata_lists_the_oauth_endpoints(oauth_service: OAuthService) -> None:
    assert oauth_service.running.admin is not None
    admin = f"http://127.0.0.1:{oauth_service.running.admin.port}"
    metadata = requests.get(admin + "/.well-known/oauth-authorization-server", timeout=5).json()

    assert metadata["token_endpoint"] == oauth_service.token_url
    assert metadata["introspection_endpoint"] == oauth_service.base_url + "/oauth2/introspect"
    assert metadata["revocation_endpoint"] == oauth_service.base_url + "/oauth2/revoke"
    assert "ES256" in metadata["dpop_signing_alg_values_supported"]
    # The OAuth port does not serve the admin endpoints.
    assert requests.get(oauth_service.base_url + "/metrics", timeout=5).status_code == 404


def test_no_token_in_the_log(oauth_service: OAuthService, caplog: pytest.LogCaptureFixture) -> None:
    parent = oauth_service.parent()
    with caplog.at_level(logging.DEBUG):
        ok = post(oauth_service, "/oauth2/token", oauth_service.exchange_form(parent))
        post(oauth_service, "/oauth2/token", oauth_service.exchange_form(parent, scope="x"))
    child = ok.json()["access_token"]

    text = "\n".join(json.dumps(r.__dict__, default=str) for r in caplog.records)
    assert "/oauth2/token" in text
    assert parent not in text and child not in text
    assert parent.split(".")[1] not in text


def test_one_line_per_request(oauth_service: OAuthService, caplog: pytest.LogCaptureFixture) -> None:
    """A token exchange's one line is its audit event with the access fields; a document's is the
    access line; as on gRPC."""
    parent = oauth_service.parent()
    with caplog.at_level(logging.INFO):
        minted = post(oauth_service, "/oauth2/token", oauth_service.exchange_form(parent))
        post(oauth_service, "/oauth2/token", oauth_service.exchange_form(parent, scope="warehouse.nope.r"))
        requests.get(oauth_service.base_url + "/.well-known/jwks.json", timeout=5)

    lines = [
        r
        for r in caplog.records
        if r.name in ("delegation_service.audit", "delegation_service.transport.oauth_http")
    ]
    assert [(r.name, r.event, r.status) for r in lines] == [  # type: ignore[attr-defined]
        ("delegation_service.audit", "delegate", 200),
        ("delegation_service.audit", "delegate", 400),
        ("delegation_service.transport.oauth_http", "http", 200),
    ]
    ok, refused, _ = lines
    assert ok.outcome == "minted" and ok.path == "/oauth2/token"  # type: ignore[attr-defined]
    payload = minted.json()["access_token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert ok.jti == claims["jti"] and ok.duration_ms > 0  # type: ignore[attr-defined]
    assert (refused.outcome, refused.reason) == ("denied", "INVALID_SCOPE_NAME")  # type: ignore[attr-defined]
