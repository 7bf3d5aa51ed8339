"""An issuer's keys from its published JWKS, found by OpenID Connect discovery or a ``jwks_uri``.

:class:`RemoteKeySource` is the :class:`~delegation_service.adapters.keys.KeySource` of a remote issuer
(SPEC §3 rule 1). Keys live in memory, parsed once per fetch; a background thread refreshes them on a
schedule (``Cache-Control: max-age`` within configured bounds), and a token naming an unknown ``kid``
triggers a refresh at once, rate-limited (at most one per ``unknown_kid_interval_seconds``, so garbage
kids cannot make us hammer the provider) and single-flight (callers arriving while a fetch is under way
wait for that fetch instead of starting another). A failed refresh keeps the last good set until it is
``max_stale_seconds`` old; past that, or before the first success, the issuer has no usable key and its
tokens are refused. A key that leaves the provider's JWKS stops verifying at the next refresh.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import Protocol

from delegation_service.adapters.http_fetch import FetchError, FetchLimits, fetch_json, tls_context
from delegation_service.adapters.keys import DEFAULT_UPSTREAM_ALGORITHMS, VerificationKey, load_remote_jwks

log = logging.getLogger(__name__)

DISCOVERY_PATH = "/.well-known/openid-configuration"


class KeySourceEvents(Protocol):
    """What a key source reports (metrics are wired to it in the composition root)."""

    def fetched(self, issuer: str, keys: int) -> None:
        """A fetch succeeded and ``keys`` usable keys are now loaded."""
        ...

    def failed(self, issuer: str, reason: str) -> None:
        """A fetch failed (``reason``: a short fixed label)."""
        ...


class _NoEvents:
    def fetched(self, issuer: str, keys: int) -> None:
        pass

    def failed(self, issuer: str, reason: str) -> None:
        pass


class SourceState(Enum):
    """How usable an issuer's keys are."""

    READY = "ready"
    """The last fetch succeeded."""
    STALE = "stale"
    """The last fetch failed; the last good set, younger than ``max_stale_seconds``, still verifies."""
    NO_KEYS = "no_keys"
    """Never fetched, or the last good set is older than ``max_stale_seconds``: tokens are refused."""


@dataclass(frozen=True)
class SourceStatus:
    """One issuer's key state, for readiness, ``config check`` and metrics."""

    issuer: str
    origin: str
    """The discovery or JWKS URL (or file) the keys come from."""
    state: SourceState
    keys: int
    age_seconds: float | None
    """Seconds since the keys in use were fetched; ``None`` before any success."""
    last_error: str | None

    @property
    def usable(self) -> bool:
        """Whether the issuer's tokens can be verified now."""
        return self.state is not SourceState.NO_KEYS


@dataclass(frozen=True)
class RemoteSettings:
    """How one remote issuer's keys are fetched and kept (one ``[[trusted_issuers]]`` table)."""

    issuer: str
    jwks_uri: str | None = None
    """``None``: discover it from ``<issuer>/.well-known/openid-configuration``."""
    algorithms: Sequence[str] = DEFAULT_UPSTREAM_ALGORITHMS
    ca_file: Path | None = None
    limits: FetchLimits = field(default_factory=FetchLimits)
    refresh_min_seconds: float = 60.0
    refresh_max_seconds: float = 3600.0
    refresh_default_seconds: float = 300.0
    """Between refreshes when the provider sends no ``max-age`` (still within the bounds above)."""
    max_stale_seconds: float = 86400.0
    unknown_kid_interval_seconds: float = 10.0
    retry_min_seconds: float = 1.0
    """First retry after a failure; doubles up to ``refresh_min_seconds``."""

    def __post_init__(self) -> None:
        if not 0 < self.refresh_min_seconds <= self.refresh_max_seconds:
            raise ValueError("need 0 < refresh_min_seconds <= refresh_max_seconds")
        if (
            self.max_stale_seconds <= 0
            or self.unknown_kid_interval_seconds < 0
            or self.retry_min_seconds <= 0
        ):
            raise ValueError("max_stale_seconds and retry_min_seconds must be positive")

    @property
    def origin(self) -> str:
        """Where the keys are found from."""
        return self.jwks_uri or self.issuer.rstrip("/") + DISCOVERY_PATH


class _Flight:
    """One fetch under way; callers that need its outcome wait on it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = False


class RemoteKeySource:
    """A remote issuer's keys, kept fresh; thread-safe. ``start()`` runs the background refresher."""

    def __init__(
        self,
        settings: RemoteSettings,
        *,
        events: KeySourceEvents | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._events: KeySourceEvents = events if events is not None else _NoEvents()
        self._now = monotonic
        self._context = tls_context(settings.ca_file)
        self._lock = threading.Lock()
        # Replaced whole on each successful fetch; readers take the reference without the lock.
        self._keys: Mapping[str, VerificationKey] = MappingProxyType({})
        self._fetched_at: float | None = None
        self._generation = 0
        self._jwks_uri = settings.jwks_uri
        self._next_max_age: int | None = None
        self._last_error: str | None = None
        self._failures = 0
        self._flight: _Flight | None = None
        self._last_on_demand = float("-inf")
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the verifier's side ----------------------------------------------------------------------

    def key(self, kid: str) -> VerificationKey | None:
        """The usable key ``kid``; an unknown kid triggers one rate-limited, single-flight refresh."""
        found = self._usable_keys().get(kid)
        if found is not None:
            return found
        self._refresh_on_demand()
        return self._usable_keys().get(kid)

    @property
    def generation(self) -> int:
        """Incremented whenever the set of keys changes."""
        return self._generation

    def _usable_keys(self) -> Mapping[str, VerificationKey]:
        fetched_at = self._fetched_at
        if fetched_at is None or self._now() - fetched_at > self.settings.max_stale_seconds:
            return MappingProxyType({})
        return self._keys

    def _refresh_on_demand(self) -> None:
        with self._lock:
            flight = self._flight
            if flight is None:
                if self._now() - self._last_on_demand < self.settings.unknown_kid_interval_seconds:
                    return  # rate-limited: the kid stays unknown until the next allowed refresh
                self._last_on_demand = self._now()
        if flight is not None:
            # Bounded: a fetch (discovery, then the JWKS) cannot outlast two fetch timeouts.
            flight.done.wait(2 * self.settings.limits.timeout_seconds + 1)
            return
        self.refresh()

    # -- fetching ---------------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Fetch now (or wait for the fetch under way) and install the keys; whether it succeeded."""
        with self._lock:
            flight = self._flight
            owner = flight is None
            if owner:
                flight = self._flight = _Flight()
        assert flight is not None
        if not owner:
            flight.done.wait(2 * self.settings.limits.timeout_seconds + 1)
            return flight.ok
        try:
            flight.ok = self._fetch_and_install()
        finally:
            with self._lock:
                self._flight = None
            flight.done.set()
        return flight.ok

    def _fetch_and_install(self) -> bool:
        settings = self.settings
        try:
            jwks_uri = self._jwks_uri or self._discover()
            fetched = fetch_json(jwks_uri, settings.limits, self._context)
            try:
                keys = load_remote_jwks(fetched.document, settings.algorithms)
            except ValueError as error:
                raise FetchError("invalid_jwks", str(error)) from None
        except FetchError as error:
            self._failed(error)
            return False
        with self._lock:
            changed = {k: v.thumbprint for k, v in keys.items()} != {
                k: v.thumbprint for k, v in self._keys.items()
            }
            self._keys = MappingProxyType(keys)
            self._fetched_at = self._now()
            self._jwks_uri = jwks_uri
            self._next_max_age = fetched.max_age_seconds
            if changed:
                self._generation += 1
            recovered = self._failures > 0
            self._failures = 0
            self._last_error = None
        self._events.fetched(settings.issuer, len(keys))
        if recovered or changed:
            log.info(
                "trusted issuer keys loaded",
                extra={"event": "jwks_loaded", "issuer": settings.issuer, "keys": sorted(keys)},
            )
        return True

    def _discover(self) -> str:
        settings = self.settings
        metadata = fetch_json(settings.origin, settings.limits, self._context).document
        # OpenID Connect Discovery §4.3: the metadata must name exactly the issuer we asked for, or a
        # provider could hand out another issuer's keys under our trusted name.
        if metadata.get("issuer") != settings.issuer:
            raise FetchError("issuer_mismatch", "the discovery document names a different issuer")
        jwks_uri = metadata.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri:
            raise FetchError("invalid_metadata", "the discovery document has no jwks_uri")
        return jwks_uri

    def _failed(self, error: FetchError) -> None:
        with self._lock:
            self._failures += 1
            first = self._failures == 1
            self._last_error = f"{error.reason}: {error}"
            if self.settings.jwks_uri is None:
                self._jwks_uri = None  # discover again: the provider may have moved its JWKS
        self._events.failed(self.settings.issuer, error.reason)
        if first:  # once per outage, not once per retry
            log.warning(
                "cannot refresh a trusted issuer's keys; keeping the last good set while it is fresh",
                extra={
                    "event": "jwks_refresh_failed",
                    "issuer": self.settings.issuer,
                    "reason": error.reason,
                    "detail": str(error),
                },
            )

    # -- the background refresher -----------------------------------------------------------------

    def start(self) -> None:
        """Refresh in the background from now on (a first fetch at once if none succeeded yet)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"jwks-refresh {self.settings.issuer}", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop the background refresher (waits for it briefly)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(2 * self.settings.limits.timeout_seconds + 1)

    def _run(self) -> None:
        delay = 0.0 if self._fetched_at is None else self._delay()
        while not self._stop.is_set():
            self._wake.wait(delay)
            self._wake.clear()
            if self._stop.is_set():
                return
            self.refresh()
            delay = self._delay()

    def _delay(self) -> float:
        settings = self.settings
        with self._lock:
            failures, max_age = self._failures, self._next_max_age
        if failures:
            return float(
                min(settings.retry_min_seconds * 2 ** min(failures - 1, 20), settings.refresh_min_seconds)
            )
        wanted = settings.refresh_default_seconds if max_age is None else max_age
        return float(min(max(wanted, settings.refresh_min_seconds), settings.refresh_max_seconds))

    # -- status -----------------------------------------------------------------------------------

    def status(self) -> SourceStatus:
        """The issuer's key state now."""
        with self._lock:
            fetched_at, keys, error, failures = (
                self._fetched_at,
                len(self._keys),
                self._last_error,
                self._failures,
            )
        age = None if fetched_at is None else self._now() - fetched_at
        if age is None or age > self.settings.max_stale_seconds:
            state = SourceState.NO_KEYS
            if error is None:
                error = "not fetched yet" if age is None else "keys older than max_stale_seconds"
        else:
            state = SourceState.STALE if failures else SourceState.READY
        return SourceStatus(self.settings.issuer, self.settings.origin, state, keys, age, error)
