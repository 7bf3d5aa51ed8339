"""``[[trusted_issuers]]`` by URL (issue 12): discovery, jwks_uri or jwks_file, and the remote bounds;
the README's provider examples load as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from delegation_service.config import Config, ConfigError, load

REPO_ROOT = Path(__file__).resolve().parents[3]
HEADER = '[issuer]\nname = "https://delegation.test.invalid"\n'


def load_text(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "config.toml"
    path.write_text(HEADER + text, encoding="utf-8")
    return load(path, {})


def readme_issuer_examples() -> list[str]:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Trusting your identity provider", 1)[1].split("\n### ", 1)[0]
    return list(re.findall(r"```toml\n(.*?)```", section, re.DOTALL))


def test_the_readme_has_keycloak_okta_and_entra_examples() -> None:
    text = "".join(readme_issuer_examples())
    for provider in ("keycloak", "okta", "microsoftonline"):
        assert provider in text


@pytest.mark.parametrize("example", readme_issuer_examples())
def test_each_readme_example_loads(tmp_path: Path, example: str) -> None:
    (tmp_path / "internal-ca.pem").write_text("", encoding="utf-8")
    [issuer] = load_text(tmp_path, example).trusted_issuers
    assert issuer.remote


def test_issuer_alone_means_discovery_with_the_default_bounds(tmp_path: Path) -> None:
    [issuer] = load_text(
        tmp_path, '[[trusted_issuers]]\nissuer = "https://idp.example/realms/x"\n'
    ).trusted_issuers
    assert (issuer.jwks_file, issuer.jwks_uri, issuer.remote) == (None, None, True)
    assert (issuer.refresh_min_seconds, issuer.max_stale_seconds, issuer.fetch_timeout_seconds) == (
        60,
        86400,
        5,
    )


def test_a_jwks_file_is_not_remote(tmp_path: Path) -> None:
    [issuer] = load_text(
        tmp_path, '[[trusted_issuers]]\nissuer = "https://idp.example"\njwks_file = "keys.json"\n'
    ).trusted_issuers
    assert issuer.jwks_file == tmp_path / "keys.json" and not issuer.remote


@pytest.mark.parametrize(
    ("table", "setting"),
    [
        ('issuer = "http://idp.example"', "issuer"),
        ('issuer = "https://idp.example"\njwks_uri = "http://idp.example/keys"', "jwks_uri"),
        (
            'issuer = "https://idp.example"\njwks_uri = "https://idp.example/k"\njwks_file = "k.json"',
            "jwks_uri",
        ),
        ('issuer = "https://idp.example"\nmax_stale_seconds = 0', "max_stale_seconds"),
        (
            'issuer = "https://idp.example"\nrefresh_min_seconds = 600\nrefresh_max_seconds = 60',
            "refresh_min_seconds",
        ),
        ('issuer = "https://idp.example"\nrefresh_every = 5', "refresh_every"),
    ],
)
def test_bad_remote_settings_name_the_setting(tmp_path: Path, table: str, setting: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, f"[[trusted_issuers]]\n{table}\n")
    assert caught.value.setting == f"trusted_issuers[0].{setting}"


def test_plain_http_is_allowed_on_loopback(tmp_path: Path) -> None:
    [issuer] = load_text(
        tmp_path, '[[trusted_issuers]]\nissuer = "http://127.0.0.1:8080/realms/dev"\n'
    ).trusted_issuers
    assert issuer.remote
