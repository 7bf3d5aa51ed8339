"""No acknowledged revocation lost on a Sentinel failover, with ``redis.min_replicas_acked`` (SPEC §5).

Real processes on loopback ports: a durable primary, one replica and three ``redis-server --sentinel``.
Revocations run under a bounded load while the primary is SIGKILLed and Sentinel promotes the replica;
afterwards every acknowledged revocation is looked for on the new primary. The scenario is the one
``make faults`` measures (:mod:`bench.faults`).
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from bench.faults import describe_failover, failover
from devtools.redis_server import RedisServer
from tests.integration.harness import start_harness

pytestmark = pytest.mark.redis

NEVER = ("INTERNAL", "UNKNOWN")


def test_with_one_replica_acknowledging_no_acknowledged_revocation_is_lost_on_failover(
    tmp_path: Path,
) -> None:
    result = failover(tmp_path, min_replicas_acked=1)
    print("\n" + "\n".join(describe_failover(result)))
    assert result.acknowledged > 0
    assert result.missing == []
    assert not [o for o in result.outcomes if o.answer in NEVER]
    # The new primary has no replica left: revocations fail closed rather than go unconfirmed.
    after = [o for o in result.outcomes if o.started > result.killed_at + result.promoted_after_seconds + 0.5]
    assert after and {o.answer for o in after} == {"UNAVAILABLE"}


def test_without_the_option_the_failover_loss_is_reported(tmp_path: Path) -> None:
    # Replication is asynchronous: what is lost depends on the replica's lag when the primary dies
    # (on loopback, usually nothing). Reported, not asserted; the option above is the guarantee.
    result = failover(tmp_path, min_replicas_acked=0)
    print("\n" + "\n".join(describe_failover(result)))
    assert result.acknowledged > 0
    assert not [o for o in result.outcomes if o.answer in NEVER]


def test_a_revocation_no_replica_confirms_fails_closed_and_checks_still_answer(
    redis_server: RedisServer,
) -> None:
    harness = start_harness(redis_server.url, redis_min_replicas_acked=1, redis_key_prefix="wait")
    try:
        with harness.client(timeout=2.0) as client:
            parent = harness.parent()
            child = client.delegate(parent, "billing", ["warehouse.items.r"]).access_token
            for revoke in (lambda: client.revoke(child), lambda: client.revoke_subject("alice")):
                with pytest.raises(grpc.RpcError) as refused:
                    revoke()
                assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
            # Not acknowledged, yet written on the primary: the token is refused there (fail closed),
            # and the caller retries the revocation (idempotent) until enough replicas confirm it.
            assert client.introspect(child).active is False
    finally:
        harness.server.stop(0)
