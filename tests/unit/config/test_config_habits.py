"""Config habits (issue 14.7): bad values are one line naming the setting, stray names are reported,
and ``config check`` prints the effective configuration with its secrets masked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from delegation_service import cli, config, config_report

REPO = Path(__file__).resolve().parents[3]
DIGEST = "a" * 64
VALID = f"""
[issuer]
name = "https://delegation.example.com"

[redis]
url = "redis://app:hunter2@redis.internal:6379/0"

[operators]
token_sha256 = ["{DIGEST}"]
"""


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in [n for n in os.environ if n.startswith(config.ENV_PREFIX)]:
        monkeypatch.delenv(name)
    path = tmp_path / "config.toml"
    path.write_text(VALID, encoding="utf-8")
    return path


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(config.ENV_PREFIX)}
    return subprocess.run(
        [sys.executable, "-m", "delegation_service.cli", *args],
        cwd=REPO,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("toml_extra", "env", "setting"),
    [
        ('[server]\nlog_level = "LOUD"\n', {}, "server.log_level"),
        ("", {"DELEGATION_SERVER_LOG_LEVEL": "verbose"}, "server.log_level"),
        ("", {"DELEGATION_SERVER_MAX_WORKERS": "eight"}, "server.max_workers"),
        ("", {"DELEGATION_SERVER_REFLECTION": "maybe"}, "server.reflection"),
        ("[tokens]\nleeway_seconds = 900\n", {}, "tokens.leeway_seconds"),
        ("[server]\nlisten = 50051\n", {}, "server.listen"),
        ('[server]\nlog_levle = "INFO"\n', {}, "server.log_levle"),
    ],
)
@pytest.mark.parametrize("command", ["serve", "config check"])
def test_a_bad_value_is_one_line_naming_the_setting_never_a_traceback(
    tmp_path: Path, toml_extra: str, env: dict[str, str], setting: str, command: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(VALID + toml_extra, encoding="utf-8")

    result = run_cli(*command.split(), "--config", str(path), env=env)

    assert result.returncode == cli.EXIT_USAGE, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"configuration error: setting {setting!r}: ")


def test_an_unknown_delegation_variable_is_a_warning_with_a_suggestion(
    config_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DELEGATION_SERVER_LOG_LEVLE", "DEBUG")  # a typo: the default would stay on
    monkeypatch.setenv("DELEGATION_PARENT_TOKEN", "x")  # the CLI's own: not reported

    assert cli.main(["config", "check", "--config", str(config_file)]) == cli.EXIT_OK

    assert capsys.readouterr().err.splitlines() == [
        "warning: environment variable DELEGATION_SERVER_LOG_LEVLE is not a setting; ignored"
        " (did you mean DELEGATION_SERVER_LOG_LEVEL?)"
    ]


def test_unknown_environment_knows_every_setting_and_the_clients_variables() -> None:
    environ = {
        "DELEGATION_REDIS_URL": "redis://x",
        "DELEGATION_ADDRESS": "127.0.0.1:1",
        "DELEGATION_NOPE": "1",
        "OTHER": "1",
    }
    assert config.unknown_environment(environ, cli.CLIENT_ENVIRONMENT) == ["DELEGATION_NOPE"]


def test_config_check_prints_the_effective_configuration_with_secrets_masked(
    config_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DELEGATION_SERVER_MAX_WORKERS", "4")

    assert cli.main(["config", "check", "--config", str(config_file)]) == cli.EXIT_OK

    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "config: ok"
    assert "server.max_workers = 4" in lines  # the environment override, not the default
    assert 'issuer.name = "https://delegation.example.com"' in lines
    assert 'redis.url = "redis://app:****@redis.internal:6379/0"' in lines
    assert 'operators.token_sha256 = ["****"]' in lines
    assert "hunter2" not in out and DIGEST not in out
    assert len(lines) == 1 + len(config.settings())


def test_config_check_json_masks_the_same(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["config", "check", "--config", str(config_file), "--output", "json"]) == cli.EXIT_OK

    report = json.loads(capsys.readouterr().out)
    assert report["config"] == "ok"
    assert report["settings"]["redis.url"] == "redis://app:****@redis.internal:6379/0"
    assert report["settings"]["operators.token_sha256"] == ["****"]
    assert report["settings"]["server.log_level"] == "INFO"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h:6379/0", "redis://:****@h:6379/0"),
        ("rediss://u:pw@h", "rediss://u:****@h"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("s1:26379,s2:26379", "s1:26379,s2:26379"),
    ],
)
def test_url_passwords_are_masked(url: str, shown: str) -> None:
    assert config_report.mask_url_password(url) == shown
