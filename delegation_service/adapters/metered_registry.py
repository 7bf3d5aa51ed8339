"""A :class:`~delegation_service.domain.ports.TokenRegistry` decorator that measures the store.

The composition root wraps the real registry (Redis or in-memory) in it, so store latency, store errors
and revocations are counted at the edge, and neither the use cases nor the registries know of metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from prometheus_client import Counter, Histogram

from delegation_service.domain.ports import ChainRevocation, MintOutcome, RevocationEvent, TokenRegistry
from delegation_service.domain.revocation import ChainSnapshot, HorizonKey, StateSnapshot, TokenRecord


class MeteredRegistry:
    """Times every call of the wrapped registry; counts failures and written revocations.

    ``latency`` and ``errors`` are labelled by ``operation`` (the method name), ``revocations`` by the
    revocation event's ``kind``. Exceptions pass through unchanged: the caller still fails closed.
    """

    def __init__(
        self, inner: TokenRegistry, *, latency: Histogram, errors: Counter, revocations: Counter
    ) -> None:
        self._inner = inner
        self._latency = latency
        self._errors = errors
        self._revocations = revocations
        # The two calls of every Delegate and Introspect: their latency children resolved once
        # (``labels()`` takes the family's lock and builds a key per call), timed without a context
        # manager (a generator per call).
        self._snapshot_seconds = latency.labels("snapshot")
        self._mint_seconds = latency.labels("mint")

    @property
    def inner(self) -> TokenRegistry:
        """The measured registry."""
        return self._inner

    @contextmanager
    def _measure(self, operation: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        except Exception:
            self._errors.labels(operation).inc()
            raise
        finally:
            self._latency.labels(operation).observe(time.perf_counter() - start)

    def _revocation(self, operation: str, write: Callable[[], RevocationEvent]) -> RevocationEvent:
        with self._measure(operation):
            event = write()
        self._revocations.labels(event.kind).inc()
        return event

    def snapshot(self, expected: TokenRecord) -> StateSnapshot:
        """See :meth:`TokenRegistry.snapshot`."""
        start = time.perf_counter()
        try:
            return self._inner.snapshot(expected)
        except Exception:
            self._errors.labels("snapshot").inc()
            raise
        finally:
            self._snapshot_seconds.observe(time.perf_counter() - start)

    def mint(self, root: TokenRecord, child: TokenRecord) -> MintOutcome:
        """See :meth:`TokenRegistry.mint`."""
        start = time.perf_counter()
        try:
            return self._inner.mint(root, child)
        except Exception:
            self._errors.labels("mint").inc()
            raise
        finally:
            self._mint_seconds.observe(time.perf_counter() - start)

    def revoke_token(self, chain_id: str, token_id: str, expires_at: int, now: int) -> RevocationEvent:
        """See :meth:`TokenRegistry.revoke_token`."""
        return self._revocation(
            "revoke_token", lambda: self._inner.revoke_token(chain_id, token_id, expires_at, now)
        )

    def revoke_chain(self, chain_id: str, expires_at: int, now: int) -> RevocationEvent:
        """See :meth:`TokenRegistry.revoke_chain`."""
        return self._revocation("revoke_chain", lambda: self._inner.revoke_chain(chain_id, expires_at, now))

    def revoke_known_chain(self, chain_id: str, now: int, *, dry_run: bool = False) -> ChainRevocation | None:
        """See :meth:`TokenRegistry.revoke_known_chain`; a dry run counts no revocation."""
        with self._measure("revoke_known_chain"):
            outcome = self._inner.revoke_known_chain(chain_id, now, dry_run=dry_run)
        if outcome is not None and outcome.event is not None:
            self._revocations.labels(outcome.event.kind).inc()
        return outcome

    def revoke_horizon(self, key: HorizonKey, at: int, now: int) -> RevocationEvent:
        """See :meth:`TokenRegistry.revoke_horizon`."""
        return self._revocation("revoke_horizon", lambda: self._inner.revoke_horizon(key, at, now))

    def record(self, chain_id: str, token_id: str) -> TokenRecord | None:
        """See :meth:`TokenRegistry.record`."""
        with self._measure("record"):
            return self._inner.record(chain_id, token_id)

    def chain(self, chain_id: str, limit: int) -> ChainSnapshot | None:
        """See :meth:`TokenRegistry.chain`."""
        with self._measure("chain"):
            return self._inner.chain(chain_id, limit)

    def events(self, after: str | None, limit: int) -> Sequence[RevocationEvent]:
        """See :meth:`TokenRegistry.events`."""
        with self._measure("events"):
            return self._inner.events(after, limit)

    def ping(self) -> bool:
        """See :meth:`TokenRegistry.ping`; a ``False`` answer counts as an error too."""
        with self._measure("ping"):
            answered = self._inner.ping()
        if not answered:
            self._errors.labels("ping").inc()
        return answered
