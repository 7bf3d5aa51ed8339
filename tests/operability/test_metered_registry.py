"""The metrics decorator of the token registry: it measures, and changes nothing it wraps."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from delegation_service.adapters.memory_registry import MemoryRegistry
from delegation_service.adapters.metered_registry import MeteredRegistry
from delegation_service.domain.errors import StoreUnavailable
from delegation_service.domain.revocation import HorizonKey, HorizonKind
from delegation_service.transport.metrics import ServiceMetrics

NOW = 1_800_000_000


class FixedClock:
    def now(self) -> int:
        return NOW


class DownRegistry(MemoryRegistry):
    """A store that cannot be reached."""

    def revoke_chain(self, chain_id: str, expires_at: int, now: int):  # type: ignore[no-untyped-def]
        raise StoreUnavailable()

    def ping(self) -> bool:
        return False


TIMED = "delegation_store_operation_duration_seconds_count"


def sample(metrics: ServiceMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def metered(inner: MemoryRegistry) -> tuple[MeteredRegistry, ServiceMetrics]:
    metrics = ServiceMetrics(CollectorRegistry(), process_metrics=False)
    registry = MeteredRegistry(
        inner, latency=metrics.store_seconds, errors=metrics.store_errors, revocations=metrics.revocations
    )
    return registry, metrics


def test_revocations_are_counted_by_kind_and_calls_are_timed() -> None:
    registry, metrics = metered(MemoryRegistry(FixedClock()))

    registry.revoke_chain("chain-1", NOW + 60, NOW)
    registry.revoke_token("chain-1", "token-1", NOW + 60, NOW)
    registry.revoke_horizon(HorizonKey(HorizonKind.SUBJECT, "alice"), NOW, NOW)
    registry.revoke_horizon(HorizonKey(HorizonKind.CLIENT, "billing"), NOW, NOW)

    for kind in ("chain", "token", "subject", "client"):
        assert sample(metrics, "delegation_revocations_total", kind=kind) == 1
    assert sample(metrics, TIMED, operation="revoke_horizon") == 2
    assert registry.events(None, 10)[0].kind == "chain"  # the wrapped store got every write
    assert sample(metrics, TIMED, operation="events") == 1


def test_store_errors_pass_through_and_are_counted() -> None:
    registry, metrics = metered(DownRegistry(FixedClock()))

    with pytest.raises(StoreUnavailable):
        registry.revoke_chain("chain-1", NOW + 60, NOW)
    assert registry.ping() is False

    assert sample(metrics, "delegation_store_errors_total", operation="revoke_chain") == 1
    assert sample(metrics, "delegation_store_errors_total", operation="ping") == 1
    assert sample(metrics, "delegation_revocations_total", kind="chain") == 0
