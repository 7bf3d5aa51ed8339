"""gRPC servicers: proto in, use case call, proto out. No rule lives here and no status is chosen here.

Errors raised by the use cases are turned into rich statuses by :mod:`.interceptors`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from delegation.v1 import admin_pb2, admin_pb2_grpc, delegation_pb2, delegation_pb2_grpc
from delegation_service.domain.binding import NO_PROOF, PossessionProof
from delegation_service.domain.errors import InvalidDpopProof, LifetimeRefused, Reason, Violation
from delegation_service.domain.policy import DelegationRequest
from delegation_service.domain.ports import RevocationEvent
from delegation_service.domain.revocation import RevocationKind, TokenState
from delegation_service.domain.scopes import Bearer, BearerType
from delegation_service.domain.tokens import TokenKind
from delegation_service.revocation_feed import Marker, MarkerType, RevocationFeed, Subscription
from delegation_service.service import DelegationService
from delegation_service.transport.auth import current_caller

ISSUED_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
DELEGATE_PATH = "/delegation.v1.DelegationService/Delegate"

ProofCheck = Callable[[str, str], str]
"""``prove(dpop_proof, parent_token)``: the thumbprint of the key of a valid DPoP proof for
``Delegate`` (htm ``POST``, htu the issuer name followed by :data:`DELEGATE_PATH`); raises
``InvalidDpopProof`` otherwise."""

_BEARER_TYPES = {
    BearerType.PERSON: delegation_pb2.BEARER_TYPE_PERSON,
    BearerType.ORGANIZATION: delegation_pb2.BEARER_TYPE_ORGANIZATION,
}
_TOKEN_KINDS = {
    TokenKind.UPSTREAM: delegation_pb2.TOKEN_KIND_UPSTREAM,
    TokenKind.DELEGATED: delegation_pb2.TOKEN_KIND_DELEGATED,
}
_TOKEN_STATES = {
    TokenState.ACTIVE: admin_pb2.TOKEN_STATE_ACTIVE,
    TokenState.REVOKED: admin_pb2.TOKEN_STATE_REVOKED,
    TokenState.EXPIRED: admin_pb2.TOKEN_STATE_EXPIRED,
    TokenState.UNKNOWN: admin_pb2.TOKEN_STATE_UNSPECIFIED,
}
_REVOCATION_KINDS = {
    RevocationKind.TOKEN: delegation_pb2.REVOCATION_KIND_TOKEN,
    RevocationKind.CHAIN: delegation_pb2.REVOCATION_KIND_CHAIN,
    RevocationKind.SUBJECT: delegation_pb2.REVOCATION_KIND_SUBJECT,
    RevocationKind.CLIENT: delegation_pb2.REVOCATION_KIND_CLIENT,
}


class DelegationServicer(delegation_pb2_grpc.DelegationServiceServicer):
    """The public service."""

    def __init__(
        self,
        service: DelegationService,
        feed: RevocationFeed,
        draining: threading.Event | None = None,
        prove: ProofCheck | None = None,
    ) -> None:
        self._service = service
        self._prove = prove
        self._feed = feed
        self._draining = draining if draining is not None else threading.Event()
        self._jwks_of: tuple[Mapping[str, object], delegation_pb2.GetJwksResponse] | None = None

    def Delegate(
        self, request: delegation_pb2.DelegateRequest, context: grpc.ServicerContext
    ) -> delegation_pb2.DelegateResponse:
        """Mint (or validate) a child token."""
        result = self._service.delegate(
            request.parent_token,
            DelegationRequest(
                client_id=request.client_id,
                scopes=tuple(request.scopes),
                lifetime_seconds=_seconds(request.lifetime) if request.HasField("lifetime") else None,
                allow_partial=request.allow_partial,
                validate_only=request.validate_only,
                audience=request.audience or None,
                proof=self._proof(context, request.parent_token),
                bind_to_jkt=request.dpop_jkt or None,
            ),
            caller=current_caller(),
            time_left=context.time_remaining,
        )
        child = result.child
        return delegation_pb2.DelegateResponse(
            access_token=result.access_token or "",
            token_type=child.confirmation.token_type if child.confirmation is not None else "Bearer",
            issued_token_type=ISSUED_TOKEN_TYPE,
            scopes=[str(s) for s in child.scopes],
            bearer=_bearer(child.bearer),
            expire_time=_timestamp(child.expires_at),
            token_id=child.token_id if result.access_token else "",
            chain_id=child.chain_id,
            client_id=child.client_id,
            refused_scopes=[
                delegation_pb2.RefusedScope(
                    scope=v.value, reason=v.reason.identifier, description=v.description
                )
                for v in result.dropped
            ],
        )

    def _proof(self, context: grpc.ServicerContext, parent_token: str) -> PossessionProof:
        """The DPoP key proved by the ``dpop`` metadata, if any (checked by the OAuth face's verifier)."""
        proofs = [v for k, v in context.invocation_metadata() or () if k == "dpop" and isinstance(v, str)]
        if not proofs:
            return NO_PROOF
        if len(proofs) > 1 or self._prove is None:
            raise InvalidDpopProof("more than one dpop entry, or DPoP not configured")
        return PossessionProof(dpop_jkt=self._prove(proofs[0], parent_token))

    def Introspect(
        self, request: delegation_pb2.IntrospectRequest, context: grpc.ServicerContext
    ) -> delegation_pb2.IntrospectResponse:
        """RFC 7662 introspection."""
        token = self._service.introspect(request.token).token
        if token is None:
            return delegation_pb2.IntrospectResponse(active=False)
        return delegation_pb2.IntrospectResponse(
            active=True,
            scopes=list(token.scopes),
            client_id=token.client_id,
            subject=token.subject,
            issuer=token.issuer,
            audiences=list(token.audiences),
            issue_time=_timestamp(token.issued_at),
            expire_time=_timestamp(token.expires_at),
            token_id=token.token_id,
            chain_id=token.chain_id,
            parent_token_id=token.parent_token_id or "",
            bearer=_bearer(token.bearer),
            actor_client_id=token.actor_client_id or "",
            kind=_TOKEN_KINDS[token.kind],
        )

    def Revoke(
        self, request: delegation_pb2.RevokeRequest, context: grpc.ServicerContext
    ) -> delegation_pb2.RevokeResponse:
        """RFC 7009 revocation by the holder."""
        self._service.revoke(request.token, caller=current_caller())
        return delegation_pb2.RevokeResponse()

    def GetJwks(
        self, request: delegation_pb2.GetJwksRequest, context: grpc.ServicerContext
    ) -> delegation_pb2.GetJwksResponse:
        """The public JWK Set; serialised again only when the keys changed (automatic rotation)."""
        jwks = self._service.jwks()
        cached = self._jwks_of
        if cached is not None and cached[0] == jwks:
            return cached[1]
        response = delegation_pb2.GetJwksResponse(
            jwks_json=json.dumps(jwks, separators=(",", ":")),
            key_ids=[str(k["kid"]) for k in _keys(jwks)],
        )
        self._jwks_of = (jwks, response)
        return response

    def WatchRevocations(
        self, request: delegation_pb2.WatchRevocationsRequest, context: grpc.ServicerContext
    ) -> Iterator[delegation_pb2.WatchRevocationsResponse]:
        """Stream revocations after the cursor until the caller goes away or the server drains.

        A follower never finishes by itself, so when shutdown begins the stream ends cleanly at once,
        instead of holding the drain for the whole grace period and then being cancelled: the follower
        resumes from its last cursor (on another server) as after any end of the stream.
        """

        def keep_going() -> bool:
            return context.is_active() and not self._draining.is_set()

        subscription = Subscription(
            request.cursor or None,
            request.include_snapshot,
            _duration_seconds(request.heartbeat_interval) if request.HasField("heartbeat_interval") else None,
        )
        stream = self._feed.subscribe(subscription, keep_going)
        # A follower that cancels or disconnects ends its stream now, not at its next wake-up.
        context.add_callback(stream.wake)
        for item in stream:
            yield watch_message(item)


class DelegationAdminServicer(admin_pb2_grpc.DelegationAdminServiceServicer):
    """The operator service (credentials are checked by the interceptor before any call lands here)."""

    def __init__(self, service: DelegationService) -> None:
        self._service = service

    def RevokeChain(
        self, request: admin_pb2.RevokeChainRequest, context: grpc.ServicerContext
    ) -> admin_pb2.RevokeChainResponse:
        """Revoke a chain or a token and everything minted from it."""
        radius = self._service.revoke_chain(
            request.chain_id,
            request.token_id,
            request.dry_run,
            request.justification,
            caller=current_caller(),
        )
        response = admin_pb2.RevokeChainResponse(
            revoked_token_count=radius.revoked_token_count,
            client_ids=list(radius.client_ids),
            dry_run=radius.dry_run,
        )
        if radius.revoked_at is not None:
            response.revoke_time.CopyFrom(_timestamp(radius.revoked_at))
        return response

    def RevokeSubject(
        self, request: admin_pb2.RevokeSubjectRequest, context: grpc.ServicerContext
    ) -> admin_pb2.RevokeSubjectResponse:
        """Revoke every token of a subject issued up to now."""
        at = self._service.revoke_subject(request.subject, request.justification, current_caller())
        return admin_pb2.RevokeSubjectResponse(revoke_time=_timestamp(at))

    def RevokeClient(
        self, request: admin_pb2.RevokeClientRequest, context: grpc.ServicerContext
    ) -> admin_pb2.RevokeClientResponse:
        """Revoke every token of a client issued up to now."""
        at = self._service.revoke_client(request.client_id, request.justification, current_caller())
        return admin_pb2.RevokeClientResponse(revoke_time=_timestamp(at))

    def GetChain(
        self, request: admin_pb2.GetChainRequest, context: grpc.ServicerContext
    ) -> admin_pb2.GetChainResponse:
        """A chain's tokens with their states."""
        view = self._service.get_chain(request.chain_id, caller=current_caller())
        return admin_pb2.GetChainResponse(
            chain_id=view.chain_id,
            revoked=view.revoked,
            tokens=[
                admin_pb2.ChainToken(
                    token_id=record.token_id,
                    parent_token_id=record.parent_token_id or "",
                    kind=_TOKEN_KINDS[record.kind],
                    client_id=record.client_id,
                    subject=record.subject,
                    scopes=record.scopes.split(),
                    bearer=record.bearer,
                    issue_time=_timestamp(record.issued_at),
                    expire_time=_timestamp(record.expires_at),
                    state=_TOKEN_STATES[state],
                )
                for record, state in view.tokens
            ],
        )


_MARKER_TYPES = {
    MarkerType.HEARTBEAT: delegation_pb2.WATCH_MESSAGE_TYPE_HEARTBEAT,
    MarkerType.SNAPSHOT_COMPLETE: delegation_pb2.WATCH_MESSAGE_TYPE_SNAPSHOT_COMPLETE,
}


def watch_message(item: RevocationEvent | Marker) -> delegation_pb2.WatchRevocationsResponse:
    """The stream message for a revocation event or a control marker."""
    if isinstance(item, Marker):
        return delegation_pb2.WatchRevocationsResponse(
            cursor=item.cursor, type=_MARKER_TYPES[item.type], server_time=_timestamp(item.server_time)
        )
    sent = timestamp_pb2.Timestamp()
    sent.GetCurrentTime()
    return delegation_pb2.WatchRevocationsResponse(
        cursor=item.cursor,
        type=delegation_pb2.WATCH_MESSAGE_TYPE_REVOCATION,
        kind=_REVOCATION_KINDS[item.kind],
        chain_id=item.chain_id,
        token_id=item.token_id,
        subject=item.subject,
        client_id=item.client_id,
        revoke_time=_timestamp(item.revoked_at),
        expire_time=_timestamp(item.expires_at),
        server_time=sent,
    )


def _duration_seconds(duration: duration_pb2.Duration) -> float:
    return duration.seconds + duration.nanos / 1e9


def _seconds(duration: duration_pb2.Duration) -> int:
    """Whole seconds of a requested lifetime, rounding a fraction up; invalid durations are refused."""
    if duration.nanos < 0 or duration.nanos >= 1_000_000_000:
        raise LifetimeRefused(
            Reason.INVALID_LIFETIME,
            "the requested lifetime is not a valid duration",
            [Violation("lifetime", "", Reason.INVALID_LIFETIME, "nanos must be in [0, 1e9)")],
        )
    return duration.seconds + (1 if duration.nanos else 0)


def _timestamp(seconds: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds)


def _bearer(bearer: Bearer) -> delegation_pb2.Bearer:
    return delegation_pb2.Bearer(type=_BEARER_TYPES[bearer.type], id=bearer.id or "")


def _keys(jwks: object) -> list[dict[str, object]]:
    keys = jwks.get("keys", []) if isinstance(jwks, dict) else []
    return [k for k in keys if isinstance(k, dict)]
