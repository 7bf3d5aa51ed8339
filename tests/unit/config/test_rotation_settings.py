"""Automatic key rotation settings: off unless issuer.key_directory is set, checked at start-up, and the
keys list command showing each key's state."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from delegation_service import app, cli
from delegation_service.config import Config, ConfigError, load
from delegation_service.dev import demo_catalog_path
from delegation_service.domain.rotation import RotationPolicy

BASE: dict[str, Any] = {"issuer": "https://delegation.rotation.invalid", "store": "memory"}


def config(**settings: Any) -> Config:
    return Config(**{**BASE, **settings}).validate()


def test_rotation_is_off_by_default_and_the_policy_counts_the_leeway_in_the_lifetime() -> None:
    loaded = config()
    assert loaded.key_directory is None
    assert loaded.rotation_policy() == RotationPolicy(2_592_000.0, 86_400.0, 3630.0)


@pytest.mark.parametrize(
    ("settings", "setting", "problem"),
    [
        ({"signing_key_files": (Path("k.pem"),)}, "issuer.signing_key_files", "not both"),
        ({"next_signing_key_files": (Path("k.pem"),)}, "issuer.next_signing_key_files", "not both"),
        ({"publish_ahead_seconds": 0.0}, "keys.publish_ahead_seconds", "positive"),
        (
            {"publish_ahead_seconds": 100.0, "rotation_interval_seconds": 100.0},
            "keys.publish_ahead_seconds",
            "less",
        ),
        ({"publish_ahead_seconds": 300.0}, "admin.jwks_max_age_seconds", "at most 270 s"),
    ],
)
def test_inconsistent_rotation_settings_name_the_setting(
    tmp_path: Path, settings: dict[str, Any], setting: str, problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem) as refused:
        config(key_directory=tmp_path, **settings)
    assert refused.value.setting == setting


def test_the_settings_load_from_the_file_and_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[issuer]\nname = "https://d.example"\nkey_directory = "keys"\n[keys]\npublish_ahead_seconds = 600\n',
        encoding="utf-8",
    )
    loaded = load(path, {"DELEGATION_KEYS_ROTATION_INTERVAL_SECONDS": "7200"})
    assert loaded.key_directory == tmp_path / "keys"
    assert loaded.rotation_policy().interval == 7200.0
    assert loaded.rotation_policy().publish_ahead == 600.0


def built(folder: Path) -> app.Application:
    return app.build(config(key_directory=folder / "keys", catalog_file=demo_catalog_path()))


def test_build_creates_the_directory_and_its_first_key_and_a_second_process_shares_it(tmp_path: Path) -> None:
    first, second = built(tmp_path), built(tmp_path)
    try:
        assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
        assert first.service.jwks() == second.service.jwks()
        assert len(list((tmp_path / "keys").iterdir())) == 1
        assert first.rotator is not None and first.rotator.snapshot is not None
    finally:
        first.close()
        second.close()


def test_a_key_directory_that_cannot_be_created_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(ConfigError) as refused:
        app.build(config(key_directory=tmp_path / "file" / "keys", catalog_file=demo_catalog_path()))
    assert refused.value.setting == "issuer.key_directory"


def test_keys_list_shows_each_keys_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    built(tmp_path).close()
    path = tmp_path / "config.toml"
    path.write_text('[issuer]\nname = "https://d.example"\nkey_directory = "keys"\n', encoding="utf-8")
    assert cli.main(["keys", "list", "--config", str(path), "--output", "json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    (row,) = listing["keys"]
    assert (row["generation"], row["state"], row["alg"], row["retires"]) == (0, "active", "ES256", None)
    assert Path(row["file"]).name == "key-00000000.json"
    assert listing["next_key_due"] > row["signs_from"]
    assert cli.main(["keys", "list", "--config", str(path)]) == 0
    text = capsys.readouterr().out
    assert "active" in text and row["kid"] in text and "next key due" in text


def test_keys_list_of_a_missing_key_directory_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[issuer]\nname = "https://d.example"\nkey_directory = "nowhere"\n', encoding="utf-8")
    assert cli.main(["keys", "list", "--config", str(path)]) == cli.EXIT_USAGE
    assert "issuer.key_directory" in capsys.readouterr().err
