"""The edge's metrics (Prometheus): decisions, introspection fallbacks, feed lag and mirror size."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

if TYPE_CHECKING:
    from delegation_service.edge.verifier import Decision, EdgeVerifier


class EdgeMetrics:
    """Metrics of one edge verifier, on a registry of its own (so several can live in one process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._decisions = Counter(
            "delegation_edge_decisions",
            "Checks decided at the edge, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self._fallbacks = Counter(
            "delegation_edge_introspect_fallbacks",
            "Checks sent to Introspect because the mirror was stale (best_effort), by result.",
            ["result"],
            registry=self.registry,
        )
        self._staleness = Gauge(
            "delegation_edge_feed_staleness_seconds",
            "Seconds since the revocation mirror was last known current (+Inf before the first time).",
            registry=self.registry,
        )
        self._entries = Gauge(
            "delegation_edge_mirror_entries",
            "Revocations in force held by the mirror (tokens, chains, horizons).",
            registry=self.registry,
        )
        self._connected = Gauge(
            "delegation_edge_feed_connected", "1 while the revocation stream is open.", registry=self.registry
        )
        self._reconnects = Gauge(
            "delegation_edge_feed_reconnects",
            "Times the revocation stream was resumed.",
            registry=self.registry,
        )
        self._resyncs = Gauge(
            "delegation_edge_feed_resyncs",
            "Times the feed started again from a snapshot (cursor expired).",
            registry=self.registry,
        )
        self._heartbeats = Gauge(
            "delegation_edge_feed_heartbeats_seen",
            "1 once the service sent a control message (heartbeats: staleness is proven, not inferred).",
            registry=self.registry,
        )

    def watch(self, verifier: EdgeVerifier) -> None:
        """Read the gauges from ``verifier`` at each scrape."""
        self._staleness.set_function(verifier.staleness)
        self._entries.set_function(lambda: len(verifier.mirror))
        self._connected.set_function(lambda: float(verifier.feed.connected))
        self._reconnects.set_function(lambda: verifier.feed.reconnects)
        self._resyncs.set_function(lambda: verifier.feed.resyncs)
        self._heartbeats.set_function(lambda: float(verifier.feed.heartbeats_seen))

    def decision(self, decision: Decision) -> None:
        """Count one decision."""
        self._decisions.labels(decision.outcome.name.lower()).inc()

    def fallback(self, result: str) -> None:
        """Count one introspection fallback (``active``, ``inactive`` or ``error``)."""
        self._fallbacks.labels(result).inc()

    def exposition(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
