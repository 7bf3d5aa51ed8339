"""The one exception tree of the domain.

Every refusal the service can give is a :class:`DelegationError` carrying a :class:`Reason`. The
transport maps reasons to gRPC status codes in exactly one table
(``delegation_service.transport.errors``); nothing else chooses a status code.

Messages are fixed strings: they never contain a token value.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass


class Reason(enum.Enum):
    """Why something was refused; the value is the seed's identifier (lower snake case)."""

    # Seed 002 identifiers.
    INVALID_SCOPE_STRUCTURE = "invalid_scope_structure"
    INVALID_AUDIENCE = "invalid_audience"
    INVALID_SCOPE_NAME = "invalid_scope_name"
    UNAVAILABLE_SCOPE_FOR_BEARER_TYPE = "unavailable_scope_for_bearer_type"
    DIFFERENT_BEARER_TYPES = "different_bearer_types"
    SCOPE_WAS_NOT_GRANTED_IN_PARENT = "scope_was_not_granted_in_parent"
    DELEGATION_ACCESS_TOKEN_CANNOT_DELEGATE = "delegation_access_token_cannot_delegate"
    # Service identifiers, in the same style.
    SCOPE_NOT_ALLOWED_FOR_CLIENT = "scope_not_allowed_for_client"
    UNKNOWN_CLIENT = "unknown_client"
    MISSING_DELEGATION_SCOPE = "missing_delegation_scope"
    PARENT_WITHOUT_CLIENT = "parent_without_client"
    EXPIRES_AFTER_PARENT = "expires_after_parent"
    INVALID_LIFETIME = "invalid_lifetime"
    NO_GRANTABLE_SCOPES = "no_grantable_scopes"
    SCOPES_REQUIRED = "scopes_required"
    TOO_MANY_SCOPES = "too_many_scopes"
    INVALID_REQUEST = "invalid_request"
    MALFORMED_REQUEST = "malformed_request"
    INVALID_PARENT_TOKEN = "invalid_parent_token"
    OPERATOR_CREDENTIALS_REQUIRED = "operator_credentials_required"
    CALLER_CREDENTIALS_REQUIRED = "caller_credentials_required"
    OPERATOR_ROLE_REQUIRED = "operator_role_required"
    CALLER_NOT_AUTHORIZED = "caller_not_authorized"
    DEADLINE_TOO_SHORT = "deadline_too_short"
    CHAIN_NOT_FOUND = "chain_not_found"
    STORE_UNAVAILABLE = "store_unavailable"
    CURSOR_EXPIRED = "cursor_expired"
    TOO_MANY_STREAMS = "too_many_streams"
    SERVER_DRAINING = "server_draining"
    # Sender-constrained children and audience narrowing.
    INVALID_DPOP_PROOF = "invalid_dpop_proof"
    PROOF_OF_POSSESSION_REQUIRED = "proof_of_possession_required"
    AUDIENCE_NOT_GRANTED = "audience_not_granted"
    SCOPE_OUTSIDE_AUDIENCE = "scope_outside_audience"
    UNSUPPORTED_GRANT_TYPE = "unsupported_grant_type"

    @property
    def identifier(self) -> str:
        """The AIP-193 form of the reason: UPPER_SNAKE_CASE."""
        return self.value.upper()


@dataclass(frozen=True)
class Violation:
    """One refused element of a request: which field, which value, why."""

    field: str
    value: str
    reason: Reason
    description: str


class DelegationError(Exception):
    """Base of every refusal; ``reason`` decides the status, ``violations`` name each culprit."""

    reason: Reason = Reason.INVALID_REQUEST
    message: str = "the request was refused"

    def __init__(
        self,
        reason: Reason | None = None,
        message: str | None = None,
        violations: Sequence[Violation] = (),
    ) -> None:
        if reason is not None:
            self.reason = reason
        if message is not None:
            self.message = message
        self.violations: tuple[Violation, ...] = tuple(violations)
        super().__init__(self.message)


class InvalidRequest(DelegationError):
    """Raised when a request field is missing or malformed (not a scope problem)."""

    reason = Reason.INVALID_REQUEST
    message = "the request is malformed"


class MalformedRequest(DelegationError):
    """Raised when the bytes received do not decode as the method's request message."""

    reason = Reason.MALFORMED_REQUEST
    message = "the request does not decode as the method's request message"


class ScopesRefused(DelegationError):
    """Raised when one or more requested scopes fail; every failing scope is a violation."""

    def __init__(self, violations: Sequence[Violation]) -> None:
        if not violations:
            raise ValueError("ScopesRefused needs at least one violation")
        first = _most_severe(violations)
        super().__init__(
            first.reason,
            f"{len(violations)} requested scope(s) refused; first: {first.description}",
            violations,
        )


class ParentRejected(DelegationError):
    """Raised when the parent token is invalid, expired, untrusted, unknown or revoked.

    The message is the same whatever the cause (SPEC §3.2); ``detail`` goes to the log only.
    """

    reason = Reason.INVALID_PARENT_TOKEN
    message = "the parent token is not valid"

    def __init__(self, detail: str) -> None:
        super().__init__()
        self.detail = detail


class ParentCannotDelegate(DelegationError):
    """Raised when the parent is itself a delegated token."""

    reason = Reason.DELEGATION_ACCESS_TOKEN_CANNOT_DELEGATE
    message = "a delegated access token cannot delegate"


class MissingDelegationScope(DelegationError):
    """Raised when the parent token does not hold the delegation scope."""

    reason = Reason.MISSING_DELEGATION_SCOPE
    message = "the parent token does not hold the delegation scope"


class ParentWithoutClient(DelegationError):
    """Raised when the parent names no client (``client_id``, ``azp`` or its issuer's actor claim)."""

    reason = Reason.PARENT_WITHOUT_CLIENT
    message = "the parent token names no client, so a child could not name who delegated"


class UnknownClient(DelegationError):
    """Raised when the target client is not registered in the catalog."""

    reason = Reason.UNKNOWN_CLIENT
    message = "the target client is not registered"


class LifetimeRefused(DelegationError):
    """Raised when a requested lifetime is not positive or outlives the parent."""


class NoGrantableScopes(DelegationError):
    """Raised when nothing would be left to grant the child."""

    reason = Reason.NO_GRANTABLE_SCOPES
    message = "no scope of the parent can be granted to the target client"


class ChainNotFound(DelegationError):
    """Raised when an operator names a chain the service has no record of."""

    reason = Reason.CHAIN_NOT_FOUND
    message = "no such chain"


class OperatorCredentialsRequired(DelegationError):
    """Raised when an operator call comes without valid operator credentials."""

    reason = Reason.OPERATOR_CREDENTIALS_REQUIRED
    message = "operator credentials are required"


class CallerCredentialsRequired(DelegationError):
    """Raised when an RPC that needs an authorised caller comes without valid caller credentials."""

    reason = Reason.CALLER_CREDENTIALS_REQUIRED
    message = "caller credentials are required"


class OperatorRoleRequired(DelegationError):
    """Raised when an authenticated caller that is not an operator calls an operator RPC."""

    reason = Reason.OPERATOR_ROLE_REQUIRED
    message = "the caller is not an operator"


class CallerNotAuthorized(DelegationError):
    """Raised when an authenticated caller may not introspect or follow revocations."""

    reason = Reason.CALLER_NOT_AUTHORIZED
    message = "the caller may not make this call"


class DeadlineTooShort(DelegationError):
    """Raised when too little of the caller's deadline is left to mint (nothing is minted)."""

    reason = Reason.DEADLINE_TOO_SHORT
    message = "the deadline leaves no time to mint a token"


class StoreUnavailable(DelegationError):
    """Raised by a registry adapter when the store cannot be reached in time (fail closed)."""

    reason = Reason.STORE_UNAVAILABLE
    message = "the token store is unavailable"


class ServerDraining(DelegationError):
    """Raised when the server is shutting down: retry the call, or resume the stream, on another server."""

    reason = Reason.SERVER_DRAINING
    message = "the server is shutting down; retry on another server"


# Malformed-input reasons outrank refusals: a request with both is first of all malformed.
_SEVERITY = (
    Reason.INVALID_SCOPE_STRUCTURE,
    Reason.INVALID_AUDIENCE,
    Reason.INVALID_SCOPE_NAME,
    Reason.DIFFERENT_BEARER_TYPES,
    Reason.SCOPE_OUTSIDE_AUDIENCE,
    Reason.DELEGATION_ACCESS_TOKEN_CANNOT_DELEGATE,
    Reason.UNAVAILABLE_SCOPE_FOR_BEARER_TYPE,
    Reason.SCOPE_WAS_NOT_GRANTED_IN_PARENT,
    Reason.SCOPE_NOT_ALLOWED_FOR_CLIENT,
)


def _most_severe(violations: Sequence[Violation]) -> Violation:
    def rank(v: Violation) -> int:
        return _SEVERITY.index(v.reason) if v.reason in _SEVERITY else len(_SEVERITY)

    return min(violations, key=rank)


class CursorExpired(DelegationError):
    """Raised when a revocation cursor is older than the retained events: some may be gone, so the
    follower must start again from a snapshot rather than silently miss them."""

    reason = Reason.CURSOR_EXPIRED
    message = "the cursor is older than the retained revocations: start again with include_snapshot"


class TooManyStreams(DelegationError):
    """Raised when a new revocation stream would pass the server's cap on open streams."""

    reason = Reason.TOO_MANY_STREAMS
    message = "too many open revocation streams: retry later or on another server"


class InvalidDpopProof(DelegationError):
    """Raised when a DPoP proof (RFC 9449) is malformed, badly signed, for another request, out of its
    time window, replayed, or for another access token; ``detail`` (for the log) says which."""

    reason = Reason.INVALID_DPOP_PROOF
    message = "the DPoP proof is not valid"

    def __init__(self, detail: str) -> None:
        super().__init__()
        self.detail = detail


class ProofOfPossessionRequired(DelegationError):
    """Raised when the parent is sender-constrained (``cnf``) and the caller did not prove its key."""

    reason = Reason.PROOF_OF_POSSESSION_REQUIRED
    message = "the parent token is sender-constrained: prove possession of its key"

    def __init__(self, detail: str) -> None:
        super().__init__()
        self.detail = detail


class AudienceNotGranted(DelegationError):
    """Raised when the requested audience is not one the child's scopes from the parent are for."""

    reason = Reason.AUDIENCE_NOT_GRANTED
    message = "the requested audience is not one the parent's scopes allow for this client"


class UnsupportedGrantType(DelegationError):
    """Raised when an OAuth token request names a grant type other than token exchange (RFC 8693)."""

    reason = Reason.UNSUPPORTED_GRANT_TYPE
    message = "only the token exchange grant (urn:ietf:params:oauth:grant-type:token-exchange) is supported"
