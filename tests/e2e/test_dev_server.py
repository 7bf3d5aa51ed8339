"""End to end: `delegation-service dev` as a subprocess, driven by the commands it prints."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator

import pytest

from tests.devserver import CLI, DevServer, start_dev


@pytest.fixture
def dev_server() -> Iterator[DevServer]:
    server = start_dev()
    yield server
    assert server.stop() == 0


def printed_commands(banner: str) -> list[str]:
    """The example commands of the banner: the indented lines after its first comment line."""
    block = banner.split("  # ", 1)[1].splitlines()[1:]
    return [line.strip() for line in block if line.strip()]


def test_dev_server_prints_a_token_that_delegates(dev_server: DevServer) -> None:
    result = dev_server.run(
        "delegate", "--client-id", "billing", "--scope", "warehouse.items.r", "--print-token"
    )
    assert result.returncode == 0, result.stderr
    child = result.stdout.strip()
    assert child.count(".") == 2

    introspected = dev_server.run("introspect", child)
    assert introspected.returncode == 0 and "active      true" in introspected.stdout


def test_the_printed_commands_work_as_pasted(dev_server: DevServer) -> None:
    commands = printed_commands(dev_server.banner)
    assert len(commands) == 6, dev_server.banner
    # Exactly as printed; only an exit-code probe is appended to each line.
    script = "\n".join(f'{command}\necho "exit=$?" >&2' for command in commands)
    result = subprocess.run(
        ["bash", "-c", script], env=dev_server.env, capture_output=True, text=True, timeout=60, check=False
    )
    exits = re.findall(r"exit=(\d+)", result.stderr)
    # delegate ok, introspect active, refused delegate (exit 1), chain show, revoke, introspect inactive.
    assert exits == ["0", "0", "1", "0", "0", "1"], result.stdout + result.stderr
    assert "DIFFERENT_BEARER_TYPES" in result.stderr and "SCOPE_NOT_ALLOWED_FOR_CLIENT" in result.stderr
    assert "revoked\n" in result.stdout
    assert result.stdout.rstrip().endswith("active      false")


def test_dev_server_on_redis(redis_server: object) -> None:
    server = start_dev(redis_server.url)  # type: ignore[attr-defined]
    try:
        assert "(Redis;" in server.banner
        result = server.run("delegate", "--client-id", "search", "--all-scopes", "--output", "json")
        assert result.returncode == 0, result.stderr
        assert '"warehouse.items.r"' in result.stdout
    finally:
        assert server.stop() == 0


def test_refused_call_exit_code_and_json_error(dev_server: DevServer) -> None:
    result = dev_server.run("delegate", "--client-id", "billing", "--scope", "a.b.rwx", "--output", "json")
    assert result.returncode == 1
    assert '"reason": "INVALID_SCOPE_STRUCTURE"' in result.stderr


def test_unreachable_server_exits_3() -> None:
    result = subprocess.run(
        [*CLI, "introspect", "x", "--address", "127.0.0.1:9", "--timeout", "1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 3
