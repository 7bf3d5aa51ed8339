"""Shutdown and worker-restart settings (issue 11): the restart backoff, and what the loader refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from delegation_service import config
from delegation_service.workers import RestartPolicy


def test_restart_delay_doubles_with_each_recent_crash_up_to_the_cap() -> None:
    policy = RestartPolicy(backoff_seconds=0.5, max_backoff_seconds=3.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


@pytest.mark.parametrize(
    ("name", "value", "setting"),
    [
        ("DELEGATION_SERVER_DRAIN_SECONDS", "-1", "server.drain_seconds"),
        ("DELEGATION_SERVER_GRACE_SECONDS", "-1", "server.grace_seconds"),
        ("DELEGATION_WORKERS_RESTART_BACKOFF_SECONDS", "-0.1", "workers.restart_backoff_seconds"),
        ("DELEGATION_WORKERS_RESTART_BACKOFF_MAX_SECONDS", "0.1", "workers.restart_backoff_max_seconds"),
        ("DELEGATION_WORKERS_CRASH_LOOP_CRASHES", "0", "workers.crash_loop_crashes"),
        ("DELEGATION_WORKERS_CRASH_LOOP_WINDOW_SECONDS", "0", "workers.crash_loop_window_seconds"),
    ],
)
def test_lifecycle_settings_out_of_range_name_the_setting(
    tmp_path: Path, name: str, value: str, setting: str
) -> None:
    file = tmp_path / "config.toml"
    file.write_text('[issuer]\nname = "https://delegation.test.invalid"\n[store]\nbackend = "memory"\n')
    with pytest.raises(config.ConfigError) as raised:
        config.load(file, {name: value})
    assert raised.value.setting == setting
