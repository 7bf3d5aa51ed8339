"""The audit trail of a run: one structured event per mint, refusal, revocation and operator action,
with the agreed fields, and never a token value or key material in any log line of the process.

The run includes a caller that puts a JWT where an identifier belongs (client_id, justification):
those fields come straight from the request, and must still not carry a token into the log.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Iterator
from typing import Any, cast

import grpc
import pytest
from cryptography.hazmat.primitives import serialization

from delegation.v1 import admin_pb2, delegation_pb2
from delegation_service.adapters.keys import SigningKey
from delegation_service.audit import AUDIT_LOGGER
from delegation_service.domain.encoding import b64url_encode
from delegation_service.logs import JsonFormatter
from tests.security.harness import (
    INTROSPECTION_SCOPE,
    OPERATOR_SCOPE,
    AuditEvent,
    SecureService,
    bearer,
    start_service,
)
from tests.security.test_adversarial import ATTACKS, Ctx

JWT_SHAPED = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*")
FIELDS = ("event", "outcome", "reason", "jti", "chain_id", "client_id", "bearer", "caller")


@pytest.fixture(scope="module")
def run(redis_server: Any, trap: Any) -> Iterator[tuple[SecureService, list[logging.LogRecord], str]]:
    """One run of the service with everything the process logs captured, as records and as JSON lines."""
    records: list[logging.LogRecord] = []
    text = io.StringIO()

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)
            text.write(JsonFormatter().format(record) + "\n")

    root = logging.getLogger()
    handler, level = Capture(logging.DEBUG), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    service = start_service(redis_server.url)
    try:
        exercise(service, trap)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    yield service, records, text.getvalue()
    service.stop()


def exercise(s: SecureService, trap: Any) -> None:
    """Mints, refusals of every kind, holder and operator revocations, operator views, access refusals."""
    operator = list(s.operator_metadata())
    parent = s.upstream()
    child = s.delegate(parent)
    s.delegate(parent, scopes=["warehouse.items.r"], lifetime=(60, 0))
    s.public().Introspect(
        delegation_pb2.IntrospectRequest(token=child.access_token),
        timeout=5,
        metadata=list(bearer(s.upstream(scope=INTROSPECTION_SCOPE))),
    )
    for attack in ATTACKS:
        if attack.name not in ("oversized-request", "scope-10000-distinct"):
            with contextlib.suppress(grpc.RpcError):
                attack.run(Ctx(s, trap))
    # A caller that puts tokens where identifiers belong.
    for call in (
        lambda: s.delegate(parent, client_id=s.upstream()),
        lambda: s.admin().RevokeSubject(
            admin_pb2.RevokeSubjectRequest(subject="carol", justification=f"because {s.upstream()}"),
            timeout=5,
            metadata=operator,
        ),
        lambda: s.admin().GetChain(
            admin_pb2.GetChainRequest(chain_id=s.upstream()), timeout=5, metadata=operator
        ),
    ):
        with contextlib.suppress(grpc.RpcError):
            call()
    admin = s.admin()
    admin.GetChain(admin_pb2.GetChainRequest(chain_id=child.chain_id), timeout=5, metadata=operator)
    admin.RevokeChain(
        admin_pb2.RevokeChainRequest(chain_id=child.chain_id, dry_run=True), timeout=5, metadata=operator
    )
    admin.RevokeChain(
        admin_pb2.RevokeChainRequest(
            chain_id=child.chain_id, token_id=child.token_id, justification="leaked"
        ),
        timeout=5,
        metadata=list(bearer(s.upstream(scope=OPERATOR_SCOPE, sub="ops-admin", client_id="ops-console"))),
    )
    admin.RevokeClient(admin_pb2.RevokeClientRequest(client_id="search"), timeout=5, metadata=operator)
    s.public().Revoke(delegation_pb2.RevokeRequest(token=parent), timeout=5)
    s.public().Revoke(delegation_pb2.RevokeRequest(token="not-a-token"), timeout=5)


def audit_events(records: list[logging.LogRecord]) -> list[AuditEvent]:
    return [r for r in cast("list[AuditEvent]", records) if r.name == AUDIT_LOGGER]


def key_material(key: SigningKey) -> list[str]:
    """Every form the private key could leak in: the PEM body, the private scalar (JWK ``d``)."""
    pem = key.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    body = "".join(pem.strip().splitlines()[1:-1])
    scalar = key.private_key.private_numbers().private_value  # type: ignore[union-attr]
    return [body[:40], b64url_encode(scalar.to_bytes(32, "big")), str(scalar)]


def test_the_log_of_a_run_holds_no_token_and_no_key_material(
    run: tuple[SecureService, list[logging.LogRecord], str],
) -> None:
    service, records, text = run
    assert len(records) > 100, "the run should have logged plenty"
    assert not JWT_SHAPED.findall(text)
    assert "PRIVATE KEY" not in text
    for secret in [*key_material(service.keys.active), *key_material(service.upstream_key)]:
        assert secret not in text
    assert service.operator_secret not in text


def test_every_mint_refusal_revocation_and_operator_action_is_one_event_with_the_agreed_fields(
    run: tuple[SecureService, list[logging.LogRecord], str],
) -> None:
    _, records, _ = run
    events = audit_events(records)
    for event in events:
        for name in FIELDS:
            assert hasattr(event, name), (event.getMessage(), name)
    kinds = {(e.event, e.outcome) for e in events}
    assert {
        ("delegate", "minted"),
        ("delegate", "denied"),
        ("revoke", "revoked"),
        ("revoke", "ignored"),
        ("revoke_chain", "dry_run"),
        ("get_chain", "viewed"),
        ("get_chain", "denied"),
        ("access", "denied"),
    } <= kinds
    minted = [e for e in events if e.outcome == "minted"]
    assert len(minted) >= 2
    for event in minted:
        assert event.jti and event.chain_id and event.client_id == "billing"
        assert event.bearer == "Per/alice" and event.caller.startswith("peer:")
    revocations = {e.kind: e for e in events if e.event == "revoke" and e.outcome == "revoked"}
    assert revocations["token"].caller.startswith("jwt:ops-console@") and revocations["token"].jti
    assert (
        revocations["client"].caller.startswith("operator:") and revocations["client"].client_id == "search"
    )
    assert revocations["chain"].caller.startswith("peer:")  # the holder revoked its own parent
    denied = [e for e in events if e.event == "delegate" and e.outcome == "denied"]
    assert all(e.reason for e in denied)
    # A refusal after the parent verified names the chain and the bearer too.
    escalation = next(e for e in denied if e.reason == "SCOPE_WAS_NOT_GRANTED_IN_PARENT")
    assert escalation.chain_id and escalation.bearer == "Per/alice" and escalation.parent_jti


def test_identifiers_carrying_tokens_are_redacted_not_logged(
    run: tuple[SecureService, list[logging.LogRecord], str],
) -> None:
    _, records, _ = run
    events = audit_events(records)
    assert any(e.client_id == "[redacted-jwt]" for e in events if e.reason == "UNKNOWN_CLIENT")
    assert any(getattr(e, "justification", "") == "because [redacted-jwt]" for e in events)
    assert any(getattr(e, "chain_id", "") == "[redacted-jwt]" for e in events if e.event == "get_chain")
