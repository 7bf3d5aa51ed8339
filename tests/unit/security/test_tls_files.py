"""TLS credentials are read and checked once, at start-up; bad files stop the process with the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from delegation_service.app import tls_credentials
from delegation_service.config import Config, ConfigError
from delegation_service.transport.tls import (
    TlsFileError,
    TlsFiles,
    peer_certificate_names,
    server_credentials,
)
from tests.security.pki import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(Path(tmp_path_factory.mktemp("pki")))


def test_good_files_give_credentials(pki: Pki) -> None:
    assert server_credentials(TlsFiles(pki.server.cert_file, pki.server.key_file)) is not None
    assert server_credentials(TlsFiles(pki.server.cert_file, pki.server.key_file, pki.ca_file)) is not None


@pytest.mark.parametrize(
    ("files", "file", "problem"),
    [
        (lambda p, d: TlsFiles(d / "missing.crt", p.server.key_file), "cert_file", "cannot read"),
        (lambda p, d: TlsFiles(p.server.key_file, p.server.key_file), "cert_file", "no PEM certificate"),
        (lambda p, d: TlsFiles(p.server.cert_file, p.server.cert_file), "key_file", "not an unencrypted"),
        (lambda p, d: TlsFiles(p.server.cert_file, p.operator.key_file), "key_file", "does not match"),
        (
            lambda p, d: TlsFiles(p.server.cert_file, p.server.key_file, p.operator.cert_file),
            "client_ca_file",
            "not a CA",
        ),
        (
            lambda p, d: TlsFiles(p.server.cert_file, p.server.key_file, d / "missing-ca.crt"),
            "client_ca_file",
            "cannot read",
        ),
    ],
)
def test_bad_files_name_the_file(pki: Pki, tmp_path: Path, files, file: str, problem: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TlsFileError) as refused:
        server_credentials(files(pki, tmp_path))
    assert refused.value.file == file
    assert problem in refused.value.problem
    assert "BEGIN" not in str(refused.value)  # never echoes key material


def test_the_composition_root_names_the_setting_of_a_bad_file(pki: Pki) -> None:
    # transport/tls.py knows files, not settings: app.py turns its error into the one-line ConfigError.
    config = Config(tls_cert_file=pki.server.cert_file, tls_key_file=pki.operator.key_file)
    with pytest.raises(ConfigError) as refused:
        tls_credentials(config)
    assert refused.value.setting == "tls.key_file"
    assert "does not match" in refused.value.problem


@pytest.mark.parametrize(
    ("context", "names"),
    [
        ({}, ()),
        ({"transport_security_type": [b"insecure"], "x509_common_name": [b"ops"]}, ()),
        ({"transport_security_type": [b"ssl"]}, ()),
        (
            {
                "transport_security_type": [b"ssl"],
                "x509_common_name": [b"ops.example"],
                "x509_subject_alternative_name": [b"ops.example", b"spiffe://x/ops", b"\xff", b"a\nb"],
            },
            ("ops.example", "spiffe://x/ops"),
        ),
    ],
)
def test_peer_certificate_names(context: dict[str, list[bytes]], names: tuple[str, ...]) -> None:
    assert peer_certificate_names(context) == names
