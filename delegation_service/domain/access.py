"""Who may call what (SPEC §6): roles, operations and the one rule that joins them.

Plain Python: the transport establishes *who* is calling (mTLS certificate, operator secret, operator
JWT) and hands over a :class:`Caller`; this module decides whether that caller may make the call, and
which refusal explains why not.

* ``Delegate`` and ``Revoke`` need no caller identity: the token presented *is* the credential.
* ``GetJwks`` is public by design.
* ``Introspect`` and ``WatchRevocations`` need the introspector role (or the operator role), so
  introspection is not an open oracle for anyone who found a token.
* Every ``DelegationAdminService`` call needs the operator role.

Missing credentials answer UNAUTHENTICATED (``*_CREDENTIALS_REQUIRED``); an authenticated caller
without the role answers PERMISSION_DENIED, so a subsystem learns that it *is* known but not allowed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from delegation_service.domain.errors import (
    CallerCredentialsRequired,
    CallerNotAuthorized,
    OperatorCredentialsRequired,
    OperatorRoleRequired,
)


class Role(enum.Enum):
    """What an authenticated caller is allowed to do beyond the public calls."""

    OPERATOR = "operator"
    """Revoke chains, subjects and clients; look at chains. Implies every other role."""
    INTROSPECTOR = "introspector"
    """Introspect tokens and follow the revocation stream (gateways, resource servers)."""


class Operation(enum.Enum):
    """The calls the service answers, as far as access control is concerned."""

    DELEGATE = "delegate"
    REVOKE_OWN_TOKEN = "revoke"
    GET_JWKS = "get_jwks"
    INTROSPECT = "introspect"
    WATCH_REVOCATIONS = "watch_revocations"
    OPERATOR_ACTION = "operator_action"


class AccessMode(enum.Enum):
    """``authenticated`` (production) or ``open`` (the dev server, on loopback only)."""

    AUTHENTICATED = "authenticated"
    OPEN = "open"
    """Introspection and the revocation stream answer any caller. Operator calls still need operator
    credentials. Configuration refuses this mode unless the server listens on loopback only."""


REQUIRED_ROLE: dict[Operation, Role | None] = {
    Operation.DELEGATE: None,
    Operation.REVOKE_OWN_TOKEN: None,
    Operation.GET_JWKS: None,
    Operation.INTROSPECT: Role.INTROSPECTOR,
    Operation.WATCH_REVOCATIONS: Role.INTROSPECTOR,
    Operation.OPERATOR_ACTION: Role.OPERATOR,
}
"""The role each operation needs (``None``: anyone; the presented token is the credential)."""


@dataclass(frozen=True)
class Caller:
    """Who is calling: an identity for the audit log and the roles its credentials prove.

    ``authenticated`` is true when the caller presented a credential the service recognises (a
    client certificate it verified, an operator secret, a caller JWT), even one that grants no role.
    """

    identity: str
    roles: frozenset[Role] = field(default_factory=frozenset)
    authenticated: bool = False

    def holds(self, role: Role) -> bool:
        """Whether the caller has ``role`` (operators hold every role)."""
        return role in self.roles or Role.OPERATOR in self.roles


def authorize(caller: Caller, operation: Operation, mode: AccessMode = AccessMode.AUTHENTICATED) -> None:
    """Return when ``caller`` may make ``operation``; raise the refusal that explains why not."""
    required = REQUIRED_ROLE[operation]
    if required is None or caller.holds(required):
        return
    if required is Role.INTROSPECTOR and mode is AccessMode.OPEN:
        return
    if required is Role.OPERATOR:
        raise OperatorRoleRequired() if caller.authenticated else OperatorCredentialsRequired()
    raise CallerNotAuthorized() if caller.authenticated else CallerCredentialsRequired()
