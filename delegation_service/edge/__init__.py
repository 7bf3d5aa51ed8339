"""Enforcement at the edge (SPEC §5a): verify children locally and honour revocations within a bound.

:class:`EdgeVerifier` is the embeddable verifier (local JWKS verification, a revocation mirror fed by
``WatchRevocations``, a staleness bound with ``strict`` or ``best_effort``); :mod:`.ext_authz` and
:mod:`.forward_auth` serve it to Envoy and to nginx/Traefik/Caddy; :mod:`.server` runs both.
"""

from delegation_service.edge.verifier import (
    Decision,
    EdgeSettings,
    EdgeVerifier,
    Outcome,
    RouteRule,
    StalenessMode,
)

__all__ = ["Decision", "EdgeSettings", "EdgeVerifier", "Outcome", "RouteRule", "StalenessMode"]
