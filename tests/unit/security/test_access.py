"""Who may call what: the rule in domain/access.py and the method table of the transport's gate."""

from __future__ import annotations

import pytest

from delegation_service.domain.access import (
    REQUIRED_ROLE,
    AccessMode,
    Caller,
    Operation,
    Role,
    authorize,
)
from delegation_service.domain.errors import DelegationError, Reason
from delegation_service.transport.authz import OPERATIONS, operation_for
from delegation_service.transport.errors import STATUS_BY_REASON

ANONYMOUS = Caller("peer:ipv4:127.0.0.1:1")
NO_ROLE = Caller("mtls:nobody", authenticated=True)
INTROSPECTOR = Caller("mtls:gateway", frozenset({Role.INTROSPECTOR}), authenticated=True)
OPERATOR = Caller("operator:abc", frozenset({Role.OPERATOR}), authenticated=True)

OK = None
CASES = [
    # (operation, caller, mode, expected reason or OK)
    *(
        (op, who, mode, OK)
        for op in (Operation.DELEGATE, Operation.REVOKE_OWN_TOKEN, Operation.GET_JWKS)
        for who in (ANONYMOUS, NO_ROLE, INTROSPECTOR, OPERATOR)
        for mode in AccessMode
    ),
    (Operation.INTROSPECT, ANONYMOUS, AccessMode.AUTHENTICATED, Reason.CALLER_CREDENTIALS_REQUIRED),
    (Operation.INTROSPECT, NO_ROLE, AccessMode.AUTHENTICATED, Reason.CALLER_NOT_AUTHORIZED),
    (Operation.INTROSPECT, INTROSPECTOR, AccessMode.AUTHENTICATED, OK),
    (Operation.INTROSPECT, OPERATOR, AccessMode.AUTHENTICATED, OK),
    (Operation.INTROSPECT, ANONYMOUS, AccessMode.OPEN, OK),
    (Operation.WATCH_REVOCATIONS, ANONYMOUS, AccessMode.AUTHENTICATED, Reason.CALLER_CREDENTIALS_REQUIRED),
    (Operation.WATCH_REVOCATIONS, NO_ROLE, AccessMode.AUTHENTICATED, Reason.CALLER_NOT_AUTHORIZED),
    (Operation.WATCH_REVOCATIONS, ANONYMOUS, AccessMode.OPEN, OK),
    (Operation.OPERATOR_ACTION, ANONYMOUS, AccessMode.AUTHENTICATED, Reason.OPERATOR_CREDENTIALS_REQUIRED),
    (Operation.OPERATOR_ACTION, NO_ROLE, AccessMode.AUTHENTICATED, Reason.OPERATOR_ROLE_REQUIRED),
    (Operation.OPERATOR_ACTION, INTROSPECTOR, AccessMode.AUTHENTICATED, Reason.OPERATOR_ROLE_REQUIRED),
    (Operation.OPERATOR_ACTION, OPERATOR, AccessMode.AUTHENTICATED, OK),
    # Open mode opens introspection only: operator calls still need operator credentials.
    (Operation.OPERATOR_ACTION, ANONYMOUS, AccessMode.OPEN, Reason.OPERATOR_CREDENTIALS_REQUIRED),
    (Operation.OPERATOR_ACTION, INTROSPECTOR, AccessMode.OPEN, Reason.OPERATOR_ROLE_REQUIRED),
]


@pytest.mark.parametrize(("operation", "caller", "mode", "expected"), CASES)
def test_authorize(operation: Operation, caller: Caller, mode: AccessMode, expected: Reason | None) -> None:
    if expected is None:
        authorize(caller, operation, mode)
        return
    with pytest.raises(DelegationError) as refused:
        authorize(caller, operation, mode)
    assert refused.value.reason is expected


def test_every_operation_has_a_rule_and_every_refusal_a_status() -> None:
    assert set(REQUIRED_ROLE) == set(Operation)
    for reason in (
        Reason.CALLER_CREDENTIALS_REQUIRED,
        Reason.CALLER_NOT_AUTHORIZED,
        Reason.OPERATOR_CREDENTIALS_REQUIRED,
        Reason.OPERATOR_ROLE_REQUIRED,
        Reason.DEADLINE_TOO_SHORT,
    ):
        assert reason in STATUS_BY_REASON


def test_every_public_method_of_the_proto_is_mapped_and_anything_else_needs_an_operator() -> None:
    from delegation.v1 import delegation_pb2  # noqa: PLC0415

    service = delegation_pb2.DESCRIPTOR.services_by_name["DelegationService"]
    names = {f"/{service.full_name}/{method.name}" for method in service.methods}
    assert names == set(OPERATIONS)
    assert operation_for("/delegation.v1.DelegationService/SomethingNew") is Operation.OPERATOR_ACTION
    assert operation_for("/delegation.v1.DelegationAdminService/RevokeChain") is Operation.OPERATOR_ACTION
