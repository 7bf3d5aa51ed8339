"""The breaker and WAIT settings: defaults, environment overrides, and mistakes named at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from delegation_service.config import ConfigError, load

MINIMAL = '[issuer]\nname = "https://delegation.example"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_wait_is_off_and_the_breaker_on_by_default(tmp_path: Path) -> None:
    config = load(write(tmp_path, MINIMAL), {})
    assert config.redis_min_replicas_acked == 0
    assert config.redis_breaker_failures == 3
    assert config.redis_breaker_cooldown_ms == 500


def test_the_environment_turns_wait_on(tmp_path: Path) -> None:
    config = load(
        write(tmp_path, MINIMAL + '[redis]\nmode = "sentinel"\nurl = "127.0.0.1:26379"\n'),
        {"DELEGATION_REDIS_MIN_REPLICAS_ACKED": "1", "DELEGATION_REDIS_REPLICA_ACK_TIMEOUT_MS": "50"},
    )
    assert (config.redis_min_replicas_acked, config.redis_replica_ack_timeout_ms) == (1, 50)


@pytest.mark.parametrize(
    ("table", "setting"),
    [
        ("breaker_failures = 0", "redis.breaker_failures"),
        ("breaker_cooldown_ms = 0", "redis.breaker_cooldown_ms"),
        ("min_replicas_acked = -1", "redis.min_replicas_acked"),
        ('mode = "cluster"\nmin_replicas_acked = 1', "redis.min_replicas_acked"),
        # WAIT must return before the socket timeout gives up on the reply.
        ("timeout_ms = 250\nreplica_ack_timeout_ms = 250", "redis.replica_ack_timeout_ms"),
        ("replica_ack_timeout_ms = 0", "redis.replica_ack_timeout_ms"),
    ],
)
def test_bad_reliability_settings_name_the_setting(tmp_path: Path, table: str, setting: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, MINIMAL + f"[redis]\n{table}\n"), {})
    assert caught.value.setting == setting
