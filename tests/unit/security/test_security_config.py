"""The security settings: what they refuse at start-up, and how keys load for rotation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from delegation_service import cli
from delegation_service.adapters.keys import KeyRole
from delegation_service.app import signing_keys
from delegation_service.config import Config, ConfigError, is_loopback_listen, load

BASE: dict[str, Any] = {"issuer": "https://delegation.example"}


def config(**settings: Any) -> Config:
    return Config(**{**BASE, **settings}).validate()


@pytest.mark.parametrize(
    ("settings", "setting"),
    [
        ({"access_mode": "open", "listen": "0.0.0.0:50051"}, "access.mode"),
        ({"access_mode": "open", "listen": "10.0.0.5:50051"}, "access.mode"),
        ({"access_mode": "open", "listen": "[::]:50051"}, "access.mode"),
        ({"access_mode": "wide-open"}, "access.mode"),
        ({"tls_cert_file": Path("c.pem")}, "tls.cert_file"),
        ({"tls_key_file": Path("k.pem")}, "tls.cert_file"),
        ({"tls_client_ca_file": Path("ca.pem")}, "tls.client_ca_file"),
        ({"operator_identities": ("ops.example",)}, "access.operator_identities"),
        ({"introspection_identities": ("gw.example",)}, "access.introspection_identities"),
        (
            {
                "tls_cert_file": Path("c"),
                "tls_key_file": Path("k"),
                "tls_client_ca_file": Path("ca"),
                "operator_identities": ("",),
            },
            "access.operator_identities",
        ),
        ({"operator_scope": "two scopes"}, "access.operator_scope"),
        ({"introspection_scope": "bad\nscope"}, "access.introspection_scope"),
        ({"handshake_timeout_seconds": 0.0}, "server.handshake_timeout_seconds"),
        ({"handshake_timeout_seconds": 600.0}, "server.handshake_timeout_seconds"),
        ({"max_concurrent_rpcs": 0}, "server.max_concurrent_rpcs"),
        ({"max_scopes": 0}, "tokens.max_scopes"),
        ({"max_scopes": 100_000}, "tokens.max_scopes"),
    ],
)
def test_unsafe_or_inconsistent_security_settings_stop_the_process(
    settings: dict[str, Any], setting: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        config(**settings)
    assert refused.value.setting == setting


@pytest.mark.parametrize("listen", ["127.0.0.1:50051", "127.0.0.2:1", "localhost:50051", "[::1]:50051"])
def test_open_mode_is_allowed_on_loopback(listen: str) -> None:
    assert is_loopback_listen(listen)
    assert config(access_mode="open", listen=listen).access_mode == "open"


def test_the_secure_mode_is_the_default() -> None:
    assert Config.access_mode == "authenticated"


def test_access_and_tls_load_from_toml_with_paths_beside_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        """
[issuer]
name = "https://delegation.example"
[tls]
cert_file = "server.crt"
key_file = "server.key"
client_ca_file = "ca.crt"
[access]
operator_identities = ["ops.example", "spiffe://example/ops"]
introspection_scope = "delegation:introspect"
[[trusted_issuers]]
issuer = "https://idp.example"
jwks_file = "idp.json"
audience = "https://delegation.example"
allow_extra_audiences = true
""",
        encoding="utf-8",
    )
    loaded = load(path, {"DELEGATION_ACCESS_INTROSPECTION_IDENTITIES": "gw.example,spiffe://example/gw"})
    assert loaded.tls_client_ca_file == tmp_path / "ca.crt"
    assert loaded.operator_identities == ("ops.example", "spiffe://example/ops")
    assert loaded.introspection_identities == ("gw.example", "spiffe://example/gw")
    assert loaded.trusted_issuers[0].rules.allow_extra_audiences is True


def write_keys(directory: Path, *names: str) -> list[Path]:
    paths = []
    for name in names:
        path = directory / f"{name}.pem"
        assert cli.main(["keys", "generate", "--out", str(path)]) == 0
        paths.append(path)
    return paths


def test_next_keys_are_loaded_as_next_and_previous_keys_as_previous(tmp_path: Path) -> None:
    active, previous, upcoming = write_keys(tmp_path, "active", "previous", "next")
    keys = signing_keys(config(signing_key_files=(active, previous), next_signing_key_files=(upcoming,)))
    assert [role for _, role in keys.roles()] == [KeyRole.ACTIVE, KeyRole.NEXT, KeyRole.PREVIOUS]
    assert len(keys.jwks()["keys"]) == 3


def test_a_key_both_active_and_next_is_refused(tmp_path: Path) -> None:
    (key,) = write_keys(tmp_path, "k")
    with pytest.raises(ConfigError) as refused:
        signing_keys(config(signing_key_files=(key,), next_signing_key_files=(key,)))
    assert refused.value.setting == "issuer.next_signing_key_files"


def test_keys_list_shows_kid_alg_role_and_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_keys(tmp_path, "k1", "k0", "k2")
    capsys.readouterr()
    path = tmp_path / "config.toml"
    path.write_text(
        '[issuer]\nname = "https://d.example"\nsigning_key_files = ["k1.pem", "k0.pem"]\n'
        'next_signing_key_files = ["k2.pem"]\n',
        encoding="utf-8",
    )
    assert cli.main(["keys", "list", "--config", str(path), "--output", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(Path(r["file"]).name, r["role"], r["alg"]) for r in rows] == [
        ("k1.pem", "active", "ES256"),
        ("k2.pem", "next", "ES256"),
        ("k0.pem", "previous", "ES256"),
    ]
    assert all(len(r["kid"]) == 43 for r in rows)  # RFC 7638 thumbprint, base64url SHA-256
    assert cli.main(["keys", "list", "--config", str(path)]) == 0
    assert "active" in capsys.readouterr().out


def test_keys_list_reports_a_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[issuer]\nname = "https://d.example"\n', encoding="utf-8")
    assert cli.main(["keys", "list", "--config", str(path)]) == cli.EXIT_USAGE
    assert "issuer.signing_key_files" in capsys.readouterr().err
