"""Configuration: TOML + environment overrides; every mistake names the setting at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from delegation_service.config import ConfigError, load


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


MINIMAL = '[issuer]\nname = "https://delegation.example"\n'


def test_minimal_file_loads_with_defaults(tmp_path: Path) -> None:
    config = load(write(tmp_path, MINIMAL), {})
    assert config.issuer == "https://delegation.example"
    assert config.listen == "127.0.0.1:50051"
    assert config.default_lifetime_seconds == 900


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    config = load(
        write(tmp_path, MINIMAL + "[tokens]\ndefault_lifetime_seconds = 60\n"),
        {"DELEGATION_TOKENS_DEFAULT_LIFETIME_SECONDS": "120", "DELEGATION_SERVER_REFLECTION": "false"},
    )
    assert config.default_lifetime_seconds == 120
    assert config.reflection is False


def test_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    config = load(write(tmp_path, MINIMAL + '[catalog]\nfile = "catalog.toml"\n'), {})
    assert config.catalog_file == tmp_path / "catalog.toml"


@pytest.mark.parametrize(
    ("text", "env", "setting"),
    [
        ("", {}, "issuer.name"),
        (MINIMAL + "[tokens]\ndefault_lifetime_seconds = -1\n", {}, "tokens.default_lifetime_seconds"),
        (MINIMAL + '[tokens]\nleeway_seconds = "soon"\n', {}, "tokens.leeway_seconds"),
        (MINIMAL, {"DELEGATION_TOKENS_LEEWAY_SECONDS": "9999"}, "tokens.leeway_seconds"),
        (MINIMAL, {"DELEGATION_SERVER_REFLECTION": "maybe"}, "server.reflection"),
        (MINIMAL + '[server]\nlisten = "nowhere"\n', {}, "server.listen"),
        (MINIMAL + "[issuer]\n", {}, "--config"),  # a duplicated table is invalid TOML
        (MINIMAL + '[redis]\nmode = "sharded"\n', {}, "redis.mode"),
        (MINIMAL + "[tokens]\ndefault_lifetme_seconds = 60\n", {}, "tokens.default_lifetme_seconds"),
        (MINIMAL + "[nonsense]\nx = 1\n", {}, "nonsense"),
        (MINIMAL + '[[trusted_issuers]]\njwks_file = "x.json"\n', {}, "trusted_issuers[0].issuer"),
        (
            MINIMAL + '[[trusted_issuers]]\nissuer = "https://delegation.example"\njwks_file = "x.json"\n',
            {},
            "trusted_issuers[0].issuer",
        ),
        (MINIMAL + '[operators]\ntoken_sha256 = ["abc"]\n', {}, "operators.token_sha256"),
    ],
)
def test_bad_configuration_names_the_setting(
    tmp_path: Path, text: str, env: dict[str, str], setting: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, text), env)
    assert caught.value.setting == setting


def test_unreadable_file_names_the_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path / "missing.toml", {})
    assert caught.value.setting == "--config"
