"""The admin HTTP port: JWKS and metadata, probes, /metrics, and the per-RPC access log.

Verified with tools this team did not write: prometheus-client's own text parser reads /metrics, and
joserfc (an independent JOSE implementation, not PyJWT which the service signs with) verifies a child
token against the JWKS fetched over HTTP.
"""

from __future__ import annotations

import json
import logging

import grpc
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from prometheus_client.parser import text_string_to_metric_families

from delegation_service.audit import AUDIT_LOGGER
from delegation_service.client import error_details
from tests.integration.harness import DELEGATION_SCOPE, SERVICE_ISSUER
from tests.operability.conftest import Service, http


def scrape(service: Service) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, parsed by prometheus-client's parser, by name and labels."""
    answer = http(service.admin_url + "/metrics")
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(answer.body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


DELEGATE = {
    "grpc_type": "UNARY",
    "grpc_service": "delegation.v1.DelegationService",
    "grpc_method": "Delegate",
}


def test_jwks_is_served_with_cache_headers_and_revalidates_by_etag(service: Service) -> None:
    answer = http(service.admin_url + "/.well-known/jwks.json")

    assert answer.status == 200
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.headers["Cache-Control"] == "public, max-age=300"
    jwks = json.loads(answer.body)
    assert jwks == service.app.service.jwks()
    assert all("d" not in key for key in jwks["keys"])
    again = http(
        service.admin_url + "/.well-known/jwks.json", headers={"If-None-Match": answer.headers["ETag"]}
    )
    assert again.status == 304 and again.body == b""


def test_authorization_server_metadata_names_issuer_jwks_uri_and_algorithms(service: Service) -> None:
    answer = http(service.admin_url + "/.well-known/oauth-authorization-server")

    metadata = json.loads(answer.body)
    assert answer.status == 200
    assert metadata["issuer"] == SERVICE_ISSUER
    assert metadata["jwks_uri"] == service.admin_url + "/.well-known/jwks.json"
    assert metadata["access_token_signing_alg_values_supported"] == ["ES256"]
    assert metadata["response_types_supported"] == []


def test_probes_and_unknown_paths(service: Service) -> None:
    assert http(service.admin_url + "/livez").status == 200
    assert http(service.admin_url + "/readyz").status == 200
    assert http(service.admin_url + "/readyz", method="HEAD").status == 200
    assert http(service.admin_url + "/nothing-here").status == 404
    assert http(service.admin_url + "/metrics", method="POST").status == 405


def test_readiness_turns_503_when_draining_while_liveness_stays_200(service: Service) -> None:
    service.running.health.drain()

    assert http(service.admin_url + "/readyz").status == 503
    assert http(service.admin_url + "/livez").status == 200


def test_joserfc_verifies_a_child_token_against_the_jwks_served_over_http(service: Service) -> None:
    with service.client() as client:
        child = client.delegate(service.parent(), "billing", ["warehouse.items.r"])
    jwks = KeySet.import_key_set(json.loads(http(service.admin_url + "/.well-known/jwks.json").body))

    token = jwt.decode(child.access_token, jwks, algorithms=["ES256"])

    assert token.header["typ"] == "at+jwt"
    assert token.header["kid"] == jwks.keys[0].kid
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": SERVICE_ISSUER},
        client_id={"essential": True, "value": "billing"},
        scope={"essential": True, "value": "warehouse.items.r"},
        jti={"essential": True, "value": child.token_id},
    ).validate(token.claims)


def test_joserfc_rejects_a_token_that_was_tampered_with(service: Service) -> None:
    with service.client() as client:
        child = client.delegate(service.parent(), "billing", ["warehouse.items.r"])
    jwks = KeySet.import_key_set(json.loads(http(service.admin_url + "/.well-known/jwks.json").body))
    header, payload, signature = child.access_token.split(".")
    forged = f"{header}.{payload}.{signature[:-4]}AAAA"

    with pytest.raises(Exception, match="signature"):
        jwt.decode(forged, jwks, algorithms=["ES256"])


def test_metrics_parse_and_counters_move_after_calls(service: Service) -> None:
    before = scrape(service)
    narrow_parent = service.parent((DELEGATION_SCOPE, "warehouse.items.r"))
    with service.client() as client:
        client.delegate(service.parent(), "billing", ["warehouse.items.r"])
        client.delegate(service.parent(), "billing", ["warehouse.items.r"], validate_only=True)
        with pytest.raises(grpc.RpcError) as refused:
            client.delegate(narrow_parent, "billing", ["warehouse.items.rw"])
        client.revoke(narrow_parent)

    after = scrape(service)

    assert error_details(refused.value).reason == "SCOPE_WAS_NOT_GRANTED_IN_PARENT"
    delta = {key: after[key] - before.get(key, 0.0) for key in after}
    assert value(delta, "grpc_server_started_total", **DELEGATE) == 3
    assert value(delta, "grpc_server_handled_total", **DELEGATE, grpc_code="OK") == 2
    assert value(delta, "grpc_server_handled_total", **DELEGATE, grpc_code="PERMISSION_DENIED") == 1
    assert value(delta, "grpc_server_handling_seconds_count", **DELEGATE) == 3
    assert value(delta, "delegation_tokens_issued_total", client_id="billing") == 1
    assert value(delta, "delegation_delegations_validated_total") == 1
    assert value(delta, "delegation_tokens_denied_total", reason="SCOPE_WAS_NOT_GRANTED_IN_PARENT") == 1
    assert value(delta, "delegation_revocations_total", kind="chain") == 1
    assert value(delta, "delegation_store_operation_duration_seconds_count", operation="mint") == 1
    kid = service.app.service.jwks()["keys"][0]["kid"]  # type: ignore[index]
    assert value(after, "delegation_signing_key_info", kid=kid, alg="ES256") == 1
    assert value(after, "delegation_verification_keys") == 1
    assert value(after, "process_cpu_seconds_total") > 0


def test_operator_refusals_are_counted_with_their_code(service: Service) -> None:
    before = scrape(service)
    with service.client() as client:
        client._operator_metadata = ()  # no credentials
        with pytest.raises(grpc.RpcError):
            client.revoke_subject("alice")

    after = scrape(service)

    labels = {
        **DELEGATE,
        "grpc_service": "delegation.v1.DelegationAdminService",
        "grpc_method": "RevokeSubject",
    }
    refused = {**labels, "grpc_code": "UNAUTHENTICATED"}
    assert (
        value(after, "grpc_server_handled_total", **refused)
        - value(before, "grpc_server_handled_total", **refused)
        == 1
    )


def test_one_line_per_rpc_and_never_a_token(service: Service, caplog: pytest.LogCaptureFixture) -> None:
    """An audited call's one line is its audit event, on the audit logger, with the access fields."""
    parent = service.parent()
    caplog.set_level(logging.INFO)
    with service.client() as client:
        child = client.delegate(parent, "billing", ["warehouse.items.r"])
        with pytest.raises(grpc.RpcError):
            client.delegate(parent, "billing", ["warehouse.nope.r"])
        client.jwks()

    lines = [r for r in caplog.records if r.name in ("delegation_service.access", AUDIT_LOGGER)]
    assert [(r.name, r.method, r.code) for r in lines] == [  # type: ignore[attr-defined]
        (AUDIT_LOGGER, "/delegation.v1.DelegationService/Delegate", "OK"),
        (AUDIT_LOGGER, "/delegation.v1.DelegationService/Delegate", "INVALID_ARGUMENT"),
        ("delegation_service.access", "/delegation.v1.DelegationService/GetJwks", "OK"),
    ]
    ok, refused, jwks = lines
    assert (ok.event, ok.outcome) == ("delegate", "minted")  # type: ignore[attr-defined]
    assert ok.jti == child.token_id and ok.chain_id == child.chain_id  # type: ignore[attr-defined]
    assert ok.peer.startswith("ipv4:127.0.0.1:") and ok.duration_ms > 0  # type: ignore[attr-defined]
    assert (refused.outcome, refused.reason) == ("denied", "INVALID_SCOPE_NAME")  # type: ignore[attr-defined]
    assert jwks.event == "rpc" and jwks.getMessage() == "rpc GetJwks OK"  # type: ignore[attr-defined]
    everything = "\n".join(str(vars(r)) for r in caplog.records)
    assert parent not in everything and child.access_token not in everything
