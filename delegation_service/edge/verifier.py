"""The edge verifier: local JWT verification, a local revocation mirror and a bounded staleness.

Embeddable as is (``EdgeVerifier(...).start()`` then ``check(authorization, path)``); the ext_authz and
forward-auth faces only translate its :class:`Decision`. It talks to the service's public API only
(``GetJwks``, ``WatchRevocations``, ``Introspect``), never to Redis, so it runs in any network zone.

Sender-constrained children (``cnf``) are checked when present: a DPoP-bound child must come
with ``Authorization: DPoP`` and a proof for this request by its key (RFC 9449 §7: htm, htu, iat, jti
replay, ath), a certificate-bound one over a connection with that client certificate (RFC 8705). A
child narrowed to one audience is refused where a route needs a scope of another.

Staleness modes, past ``max_staleness_seconds`` since the feed was last known current:

* ``strict``: every check fails closed (503): no revoked child passes, at the cost of availability;
* ``best_effort``: each check asks ``Introspect`` (the service's own answer, one round trip), and
  fails closed (503) when that fails too.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc

from delegation.v1 import delegation_pb2, delegation_pb2_grpc
from delegation_service.adapters.clock import SystemClock
from delegation_service.adapters.dpop import DpopVerifier
from delegation_service.adapters.dpop_replay import MemoryProofReplayCache
from delegation_service.adapters.keys import ASYMMETRIC_ALGORITHMS
from delegation_service.domain.audience import audience_of
from delegation_service.domain.dpop import ProofWindow
from delegation_service.domain.errors import InvalidDpopProof, ParentRejected, StoreUnavailable
from delegation_service.domain.revocation import TokenState
from delegation_service.domain.scopes import ScopeSyntaxError, parse_scope
from delegation_service.domain.tokens import TokenKind, VerifiedToken
from delegation_service.edge.feed import RevocationFeed
from delegation_service.edge.keys import PublishedKeyVerifier
from delegation_service.edge.metrics import EdgeMetrics
from delegation_service.edge.mirror import FeedClock, RevocationMirror

log = logging.getLogger(__name__)

REALM = "delegation-service"
IDENTITY_HEADERS = (
    "x-delegation-subject",
    "x-delegation-client-id",
    "x-delegation-scopes",
    "x-delegation-chain-id",
    "x-delegation-token-id",
    "x-delegation-actor",
)
"""The headers an allowed request carries to the upstream; a gateway must strip them from clients."""


class StalenessMode(enum.Enum):
    """What a check does once the mirror is staler than the bound."""

    STRICT = "strict"
    BEST_EFFORT = "best_effort"


class Outcome(enum.Enum):
    """A check's answer, with the HTTP status every face maps it to."""

    ALLOW = 200
    UNAUTHENTICATED = 401
    FORBIDDEN = 403
    UNAVAILABLE = 503


@dataclass(frozen=True)
class RouteRule:
    """Requests whose path starts with ``prefix`` need a token covering ``scope``."""

    prefix: str
    scope: str

    def __post_init__(self) -> None:
        if not self.prefix.startswith("/"):
            raise ValueError(f"a route prefix starts with '/': {self.prefix!r}")
        parse_scope(self.scope)  # refuse a rule no token could ever satisfy, at start-up

    @classmethod
    def parse(cls, text: str) -> RouteRule:
        """``/prefix=scope``, as given on the command line."""
        prefix, sep, scope = text.partition("=")
        if not sep:
            raise ValueError(f"a route is PREFIX=SCOPE: {text!r}")
        return cls(prefix, scope)


@dataclass(frozen=True)
class EdgeSettings:
    """How the edge verifies: whose tokens, for which audience, on which routes, how stale at most."""

    issuer: str
    audience: str | None = None
    routes: Sequence[RouteRule] = ()
    """Longest prefix wins. With rules, a path no rule covers is refused (403); with none, any valid
    child passes."""
    mode: StalenessMode = StalenessMode.STRICT
    max_staleness_seconds: float = 5.0
    leeway_seconds: int = 5
    heartbeat_seconds: int = 1
    introspect_timeout_seconds: float = 2.0
    caller_token: str | None = field(default=None, repr=False)
    """Sent as ``authorization: Bearer`` on ``WatchRevocations`` and ``Introspect`` (an operator secret
    or an introspection JWT), when the service does not know the edge by its client certificate."""

    def __post_init__(self) -> None:
        if self.max_staleness_seconds <= 0:
            raise ValueError("max_staleness_seconds must be positive")
        if self.heartbeat_seconds * 2 > self.max_staleness_seconds:
            # One missed heartbeat must not be enough to cross the bound.
            raise ValueError("max_staleness_seconds must be at least twice heartbeat_seconds")


@dataclass(frozen=True)
class RequestFacts:
    """What the gateway tells about the request beyond its token and path, for sender-constrained
    children: the method and absolute URL the client used, its ``DPoP`` header fields, and the SHA-256
    thumbprint of its TLS client certificate (RFC 8705 ``x5t#S256``), when the gateway passes them."""

    method: str = "GET"
    url: str | None = None
    dpop_proofs: tuple[str, ...] = ()
    certificate_x5t_s256: str | None = None


NO_FACTS = RequestFacts()


@dataclass(frozen=True)
class Decision:
    """What one check decided, and what to tell the gateway."""

    outcome: Outcome
    reason: str
    headers: tuple[tuple[str, str], ...] = ()
    """Identity headers for the upstream (allowed), or ``www-authenticate`` (refused)."""

    @property
    def allowed(self) -> bool:
        return self.outcome is Outcome.ALLOW


class EdgeVerifier:
    """Verifies child tokens at the edge; see the module docstring."""

    def __init__(
        self,
        channel: grpc.Channel,
        settings: EdgeSettings,
        *,
        feed_channel: grpc.Channel | None = None,
        metrics: EdgeMetrics | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.mirror = RevocationMirror()
        self.clock = FeedClock()
        self.metrics = metrics if metrics is not None else EdgeMetrics()
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self._metadata = (
            (("authorization", f"Bearer {settings.caller_token}"),) if settings.caller_token else ()
        )
        self._keys = PublishedKeyVerifier(channel, settings.issuer, settings.leeway_seconds)
        self._stub = delegation_pb2_grpc.DelegationServiceStub(channel)
        self.feed = RevocationFeed(
            feed_channel if feed_channel is not None else channel,
            self.mirror,
            self.clock,
            heartbeat_seconds=settings.heartbeat_seconds,
            metadata=self._metadata,
            on_message=self._prune_now_and_then,
            monotonic=monotonic,
        )
        self._routes = sorted(settings.routes, key=lambda rule: len(rule.prefix), reverse=True)
        self._last_prune = monotonic()
        clock = SystemClock()
        self._dpop = DpopVerifier(
            MemoryProofReplayCache(clock), clock, ProofWindow(leeway_seconds=settings.leeway_seconds)
        )
        self.metrics.watch(self)

    def start(self) -> EdgeVerifier:
        """Fetch the keys (a failure is retried on the first check) and start following revocations."""
        try:
            self._keys.refresh()
        except (grpc.RpcError, ValueError) as error:
            log.warning("edge: could not fetch the JWKS yet (%s)", type(error).__name__)
        self.feed.start()
        return self

    def close(self) -> None:
        """Stop following revocations."""
        self.feed.stop()

    def staleness(self) -> float:
        """Seconds since the mirror was last known current (``inf`` before the first time)."""
        return self.clock.staleness(self._monotonic())

    def check(self, authorization: str | None, path: str = "/", facts: RequestFacts = NO_FACTS) -> Decision:
        """Decide on one request from its ``Authorization`` header, path and (for bound children) the
        facts the gateway passes."""
        decision = self._decide(authorization, path, facts)
        self.metrics.decision(decision)
        return decision

    def _decide(self, authorization: str | None, path: str, facts: RequestFacts) -> Decision:
        presented = presented_token(authorization)
        if presented is None:
            return _refused(Outcome.UNAUTHENTICATED, "no bearer token", _challenge())
        scheme, token = presented
        try:
            verified = self._keys.verify(token)
        except ParentRejected:
            return _invalid_token("token not valid")
        if verified.kind is not TokenKind.DELEGATED:
            return _invalid_token("not a child token")
        audience = self.settings.audience
        if audience is not None and audience not in verified.audiences:
            return _invalid_token("audience mismatch")
        unbound = self._binding_refusal(verified, scheme, token, facts)
        if unbound is not None:
            return unbound
        if self.staleness() <= self.settings.max_staleness_seconds:
            state = self.mirror.state(verified, int(self._wall_clock()))
            if state is not TokenState.ACTIVE:
                return _invalid_token(f"token {state.value}")
        elif self.settings.mode is StalenessMode.STRICT:
            return _refused(Outcome.UNAVAILABLE, "revocation mirror stale", _challenge())
        else:
            fallback = self._introspect(token)
            if fallback is not None:
                return fallback
        return self._authorize(verified, path)

    def _binding_refusal(
        self, token: VerifiedToken, scheme: str, raw: str, facts: RequestFacts
    ) -> Decision | None:
        """``None`` when the token is unbound or the request proves its key; the refusal otherwise."""
        binding = token.confirmation
        if binding is None:
            return None
        if binding.jkt is not None:
            if scheme != "dpop":
                return _refused(Outcome.UNAUTHENTICATED, "DPoP-bound token sent as bearer", _dpop_challenge())
            if len(facts.dpop_proofs) != 1 or facts.url is None:
                return _refused(
                    Outcome.UNAUTHENTICATED, "no DPoP proof", _dpop_challenge("invalid_dpop_proof")
                )
            try:
                jkt = self._dpop.verify(
                    facts.dpop_proofs[0],
                    method=facts.method,
                    url=facts.url,
                    access_token=raw,
                    require_ath=True,
                )
            except InvalidDpopProof:
                return _refused(
                    Outcome.UNAUTHENTICATED, "DPoP proof not valid", _dpop_challenge("invalid_dpop_proof")
                )
            except StoreUnavailable:
                return _refused(Outcome.UNAVAILABLE, "DPoP replay cache full", _challenge())
            if jkt != binding.jkt:
                return _refused(
                    Outcome.UNAUTHENTICATED, "DPoP proof by another key", _dpop_challenge("invalid_token")
                )
        if binding.x5t_s256 is not None and facts.certificate_x5t_s256 != binding.x5t_s256:
            return _invalid_token("not the client certificate the token is bound to")
        return None

    def _introspect(self, token: str) -> Decision | None:
        """``None`` when the service says the token is active; a refusal otherwise."""
        try:
            response = self._stub.Introspect(
                delegation_pb2.IntrospectRequest(token=token),
                timeout=self.settings.introspect_timeout_seconds,
                metadata=self._metadata,
            )
        except grpc.RpcError:
            self.metrics.fallback("error")
            return _refused(Outcome.UNAVAILABLE, "mirror stale and introspection failed", _challenge())
        self.metrics.fallback("active" if response.active else "inactive")
        return None if response.active else _invalid_token("token not active (introspection)")

    def _authorize(self, token: VerifiedToken, path: str) -> Decision:
        routed, required = self._required_scope(path)
        if not routed:
            return _refused(Outcome.FORBIDDEN, "no route rule", _challenge('error="insufficient_scope"'))
        if required is not None and audience_of(parse_scope(required)) not in token.audiences:
            # A child narrowed to another resource server: its aud does not name this one.
            return _refused(
                Outcome.FORBIDDEN, "audience not granted", _challenge('error="insufficient_scope"')
            )
        if required is not None and not covers(token.scopes, required):
            return _refused(
                Outcome.FORBIDDEN,
                "insufficient scope",
                _challenge(f'error="insufficient_scope", scope="{required}"'),
            )
        values = (
            token.subject,
            token.client_id,
            " ".join(token.scopes),
            token.chain_id,
            token.token_id,
            token.actor_client_id or "",
        )
        return Decision(Outcome.ALLOW, "allowed", tuple(zip(IDENTITY_HEADERS, values, strict=True)))

    def _required_scope(self, path: str) -> tuple[bool, str | None]:
        """Whether a rule covers the path (always, with no rules), and the scope it needs."""
        if not self._routes:
            return True, None
        for rule in self._routes:
            if path.startswith(rule.prefix):
                return True, rule.scope
        return False, None

    def _prune_now_and_then(self) -> None:
        now = self._monotonic()
        if now - self._last_prune >= 10.0:
            self._last_prune = now
            self.mirror.prune(int(self._wall_clock()))


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header (scheme case-insensitive, RFC 6750 §2.1)."""
    presented = presented_token(authorization)
    return presented[1] if presented is not None and presented[0] == "bearer" else None


def presented_token(authorization: str | None) -> tuple[str, str] | None:
    """The scheme (``bearer`` or ``dpop``, lower case) and token of an ``Authorization`` header."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() not in ("bearer", "dpop") or not token or " " in token:
        return None
    return scheme.lower(), token


def covers(held: Sequence[str], required: str) -> bool:
    """Whether any held scope covers ``required`` (the domain's lattice: ``rw`` covers ``r``)."""
    wanted = parse_scope(required)
    for text in held:
        try:
            if parse_scope(text).covers(wanted):
                return True
        except ScopeSyntaxError:
            continue
    return False


def _invalid_token(reason: str) -> Decision:
    # RFC 6750 §3.1: the description never says which check failed, nor repeats the token.
    return _refused(Outcome.UNAUTHENTICATED, reason, _challenge('error="invalid_token"'))


def _refused(outcome: Outcome, reason: str, challenge: str) -> Decision:
    return Decision(outcome, reason, (("www-authenticate", challenge),))


def _dpop_challenge(error: str = "") -> str:
    """An RFC 9449 §7.1 ``WWW-Authenticate: DPoP`` challenge."""
    algs = " ".join(sorted(ASYMMETRIC_ALGORITHMS))
    return f'DPoP realm="{REALM}", algs="{algs}"' + (f', error="{error}"' if error else "")


def _challenge(parameters: str = "") -> str:
    """An RFC 6750 ``WWW-Authenticate`` challenge."""
    return f'Bearer realm="{REALM}"' + (f", {parameters}" if parameters else "")
