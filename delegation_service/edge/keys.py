"""The service's published keys at the edge: ``GetJwks`` parsed once, refreshed when a ``kid`` is new.

Verification itself is the service's own :class:`JwtVerifier` (one home for every JWT rule), built over
the published public keys with no upstream issuer trusted: only children of this service pass.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import cast

import grpc

from delegation.v1 import delegation_pb2, delegation_pb2_grpc
from delegation_service.adapters.jwt_codec import JwtVerifier
from delegation_service.adapters.keys import KeySet, VerificationKey, load_jwks
from delegation_service.domain.errors import ParentRejected
from delegation_service.domain.tokens import VerifiedToken

UNKNOWN_KID = "unknown kid"
"""The fixed ``ParentRejected.detail`` the verifier gives for a ``kid`` it does not hold."""

MIN_REFRESH_SECONDS = 5.0
"""Unknown ``kid`` values are attacker-chosen: refresh at most this often, whatever tokens arrive."""


class _PublishedKeys:
    """The public half of a key set: all :class:`JwtVerifier` reads of its ``own_keys``."""

    def __init__(self, keys: Mapping[str, VerificationKey]) -> None:
        self._keys = keys

    def verification_keys(self) -> Mapping[str, VerificationKey]:
        return self._keys


class PublishedKeyVerifier:
    """Verifies child tokens against the service's JWKS, fetched over ``GetJwks``."""

    def __init__(
        self,
        channel: grpc.Channel,
        issuer: str,
        leeway_seconds: int,
        *,
        timeout: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stub = delegation_pb2_grpc.DelegationServiceStub(channel)
        self._issuer = issuer
        self._leeway = leeway_seconds
        self._timeout = timeout
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._verifier: JwtVerifier | None = None
        self._fetched_at = float("-inf")
        self.refreshes = 0

    def refresh(self) -> None:
        """Fetch the JWKS and rebuild the verifier; an error leaves the previous keys in place."""
        response = self._stub.GetJwks(delegation_pb2.GetJwksRequest(), timeout=self._timeout)
        keys = load_jwks(json.loads(response.jwks_json))
        # JwtVerifier only reads verification_keys() of its key set; the edge holds no private key.
        verifier = JwtVerifier(
            self._issuer, cast(KeySet, _PublishedKeys(keys)), trusted=(), leeway_seconds=self._leeway
        )
        with self._lock:
            self._verifier = verifier
            self._fetched_at = self._monotonic()
            self.refreshes += 1

    def verify(self, raw_token: str) -> VerifiedToken:
        """Verify a child token; raise :class:`ParentRejected` (``detail`` says why) otherwise."""
        verifier = self._verifier
        if verifier is None:
            self._refresh_if_due()
            verifier = self._verifier
            if verifier is None:
                raise ParentRejected("no signing keys fetched yet")
        try:
            return verifier.verify(raw_token)
        except ParentRejected as rejected:
            if rejected.detail != UNKNOWN_KID or not self._refresh_if_due():
                raise
        assert self._verifier is not None
        return self._verifier.verify(raw_token)

    def _refresh_if_due(self) -> bool:
        if self._monotonic() - self._fetched_at < MIN_REFRESH_SECONDS:
            return False
        try:
            self.refresh()
        except (grpc.RpcError, ValueError):
            with self._lock:
                self._fetched_at = self._monotonic()  # do not hammer a failing service either
            return False
        return True
