"""TLS and mutual TLS for the gRPC port: credentials built once at start-up from PEM files.

The files are read and checked here (certificate parses, key parses and matches the certificate, the
client CA holds CA certificates) so that a bad file stops the process at start-up with a message naming
the file (:class:`TlsFileError`; the composition root names the setting), instead of failing each
handshake later. This module knows paths, not settings: it never imports the configuration.

grpcio can either require and verify a client certificate or not ask for one at all; it cannot ask for
an optional one. So a configured client CA means mutual TLS for every connection.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from delegation_service.domain.binding import certificate_thumbprint

log = logging.getLogger(__name__)

_PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"


class TlsFileError(ValueError):
    """Raised when a TLS file is missing, unreadable or inconsistent; ``file`` names the field of
    :class:`TlsFiles` (``cert_file``, ``key_file`` or ``client_ca_file``), ``problem`` says what is wrong
    (never the file's content)."""

    def __init__(self, file: str, problem: str) -> None:
        super().__init__(f"{file}: {problem}")
        self.file = file
        self.problem = problem


@dataclass(frozen=True)
class TlsFiles:
    """The PEM files of the gRPC port's TLS settings."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Server credentials for ``files``; mTLS (client certificate required) when a client CA is given.

    Raises :class:`TlsFileError` naming the file when one is missing, unreadable or inconsistent.
    """
    chain = _read(files.cert_file, "cert_file")
    key = _read(files.key_file, "key_file")
    certificates = _certificates(chain, "cert_file")
    try:
        private_key = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        raise TlsFileError("key_file", "not an unencrypted PEM private key") from None
    leaf_public = (
        certificates[0]
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    key_public = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if leaf_public != key_public:
        raise TlsFileError("key_file", "does not match the first certificate of the certificate file")
    client_ca: bytes | None = None
    if files.client_ca_file is not None:
        client_ca = _read(files.client_ca_file, "client_ca_file")
        for certificate in _certificates(client_ca, "client_ca_file"):
            if not _is_ca(certificate):
                raise TlsFileError("client_ca_file", "holds a certificate that is not a CA")
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def http_server_context(files: TlsFiles) -> ssl.SSLContext:
    """The OAuth HTTP port's TLS context from the same files as the gRPC port (checked by
    :func:`server_credentials` first). With a client CA, a client certificate is asked for and verified
    but optional (the standard library can, unlike grpcio): a caller without one still exchanges
    unbound tokens, and one with one proves a certificate binding (RFC 8705) or an identity."""
    server_credentials(files)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(files.cert_file, files.key_file)
    if files.client_ca_file is not None:
        context.load_verify_locations(cafile=files.client_ca_file)
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def certificate_facts(connection: object) -> tuple[tuple[str, ...], str | None]:
    """The verified client certificate of a TLS socket: its subject CN and SAN values, and its RFC 8705
    ``x5t#S256`` thumbprint (base64url SHA-256 of the DER); ``((), None)`` without one."""
    if not isinstance(connection, ssl.SSLSocket):
        return (), None
    der = connection.getpeercert(binary_form=True)
    if not der:
        return (), None
    certificate = x509.load_der_x509_certificate(der)
    names = [str(a.value) for a in certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    try:
        alternatives = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        alternatives = x509.SubjectAlternativeName([])
    for general_name in alternatives:
        value = str(general_name.value)
        if value not in names:
            names.append(value)
    return tuple(n for n in names if n.isprintable()), certificate_thumbprint(der)


def channel_credentials(
    ca_file: Path | None = None, cert_file: Path | None = None, key_file: Path | None = None
) -> grpc.ChannelCredentials:
    """Client-side credentials: trust ``ca_file`` (else the system roots), present a certificate if given."""
    return grpc.ssl_channel_credentials(
        root_certificates=ca_file.read_bytes() if ca_file is not None else None,
        private_key=key_file.read_bytes() if key_file is not None else None,
        certificate_chain=cert_file.read_bytes() if cert_file is not None else None,
    )


def peer_certificate_names(auth_context: Mapping[str, object]) -> tuple[str, ...]:
    """The subject CN and SAN values of the verified client certificate, from gRPC's auth context.

    Empty when the connection is not TLS or carries no client certificate. gRPC fills these properties
    only after it verified the certificate against the configured client CA.
    """
    if b"ssl" not in _values(auth_context, "transport_security_type"):
        return ()
    names: list[str] = []
    for prop in ("x509_common_name", "x509_subject_alternative_name"):
        for value in _values(auth_context, prop):
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError:
                continue
            if text and text.isprintable() and text not in names:
                names.append(text)
    return tuple(names)


def _values(auth_context: Mapping[str, object], name: str) -> Sequence[bytes]:
    """A property of the auth context as a list of byte strings (grpcio gives a list per name)."""
    value = auth_context.get(name, ())
    if isinstance(value, bytes):
        return (value,)
    if isinstance(value, list | tuple):
        return tuple(v for v in value if isinstance(v, bytes))
    return ()


def _read(path: Path, file: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise TlsFileError(file, f"cannot read {path}: {error.strerror}") from None


def _certificates(pem: bytes, file: str) -> list[x509.Certificate]:
    if _PEM_CERTIFICATE not in pem:
        raise TlsFileError(file, "holds no PEM certificate")
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise TlsFileError(file, "holds a malformed PEM certificate") from None


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return constraints.ca
