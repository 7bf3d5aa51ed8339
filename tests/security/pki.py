"""A throw-away PKI for the TLS tests, generated at test time with ``cryptography`` (no key is committed).

Two independent CAs (ours and a stranger's), a server certificate for ``localhost``/127.0.0.1, and client
certificates: an operator, a subsystem, a gateway (URI SAN), one on no list, and one signed by the
stranger CA with an operator's name.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

OPERATOR_NAME = "ops.delegation.test"
SUBSYSTEM_NAME = "billing.delegation.test"
NOBODY_NAME = "nobody.delegation.test"
GATEWAY_URI = "spiffe://delegation.test/gateway"
SERVER_NAME = "localhost"


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as PEM bytes and as files."""

    cert_pem: bytes
    key_pem: bytes
    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class Pki:
    """Everything the TLS tests need."""

    ca_file: Path
    ca_pem: bytes
    server: Issued
    operator: Issued
    subsystem: Issued
    gateway: Issued
    nobody: Issued
    stranger_ca_pem: bytes
    stranger_operator: Issued


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    directory: Path,
    stem: str,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    common_name: str,
    sans: list[x509.GeneralName],
    server: bool,
) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(ca[1], hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    cert_file, key_file = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_file.write_bytes(cert_pem)
    key_file.write_bytes(key_pem)
    key_file.chmod(0o600)
    return Issued(cert_pem, key_pem, cert_file, key_file)


def make_pki(directory: Path) -> Pki:
    """Generate the test PKI under ``directory``."""
    ours = _ca("delegation test CA")
    stranger = _ca("stranger CA")
    ca_pem = ours[0].public_bytes(serialization.Encoding.PEM)
    ca_file = directory / "ca.crt"
    ca_file.write_bytes(ca_pem)
    server = _leaf(
        directory,
        "server",
        ours,
        SERVER_NAME,
        [x509.DNSName(SERVER_NAME), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        server=True,
    )
    operator = _leaf(directory, "operator", ours, OPERATOR_NAME, [x509.DNSName(OPERATOR_NAME)], False)
    subsystem = _leaf(directory, "subsystem", ours, SUBSYSTEM_NAME, [x509.DNSName(SUBSYSTEM_NAME)], False)
    gateway = _leaf(
        directory, "gateway", ours, "gateway", [x509.UniformResourceIdentifier(GATEWAY_URI)], False
    )
    nobody = _leaf(directory, "nobody", ours, NOBODY_NAME, [x509.DNSName(NOBODY_NAME)], False)
    stranger_operator = _leaf(
        directory, "stranger-operator", stranger, OPERATOR_NAME, [x509.DNSName(OPERATOR_NAME)], False
    )
    return Pki(
        ca_file=ca_file,
        ca_pem=ca_pem,
        server=server,
        operator=operator,
        subsystem=subsystem,
        gateway=gateway,
        nobody=nobody,
        stranger_ca_pem=stranger[0].public_bytes(serialization.Encoding.PEM),
        stranger_operator=stranger_operator,
    )
