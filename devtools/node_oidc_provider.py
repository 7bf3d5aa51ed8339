"""panva's ``oidc-provider`` (npm, pinned in ``devtools/oidc-provider-node/``) run on a free loopback port.

A real, certified OpenID provider for the tests: discovery, a JWKS, and JWT access tokens for
``client_credentials`` with a resource indicator (RFC 8707). Each resource names the algorithm its tokens
are signed with (ES256, RS256, PS256), all for one audience. The RSA key is published *without* ``alg``,
as many providers do, and signs both RS256 and PS256. :meth:`NodeOidcProvider.rotate` swaps the signing
keys on the running provider (same port, SIGHUP). Needs ``node`` and ``npm ci`` in the project folder
(``make oidc-provider-node``).
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from delegation_service.adapters.keys import PublicKey, jwk_thumbprint
from devtools.redis_server import free_loopback_port

PROJECT = Path(__file__).resolve().parent / "oidc-provider-node"
AUDIENCE = "delegation-service"
RESOURCES: Mapping[str, str] = {
    "ES256": "urn:delegation:es256",
    "RS256": "urn:delegation:rs256",
    "PS256": "urn:delegation:ps256",
}
START_SECONDS = 30.0


def node_missing_reason() -> str | None:
    """Why the provider cannot run here (``None`` when it can)."""
    if shutil.which("node") is None:
        return "node is not installed (the real OpenID provider tests need Node 20+)"
    if not (PROJECT / "node_modules" / "oidc-provider").is_dir():
        return f"run `npm ci` in {PROJECT.name} first (make oidc-provider-node)"
    return None


@dataclass(frozen=True)
class Client:
    """A confidential client of the provider (``client_secret_basic``, ``client_credentials`` only)."""

    client_id: str
    scope: str
    org_id: str | None = None
    """When set, its tokens carry an ``org_id`` claim (extraTokenClaims)."""
    client_secret: str = ""


def _private_jwk(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, alg: str | None) -> dict[str, Any]:
    exported = (
        ECAlgorithm.to_jwk(key, as_dict=True)
        if isinstance(key, ec.EllipticCurvePrivateKey)
        else RSAAlgorithm.to_jwk(key, as_dict=True)
    )
    exported.pop("key_ops", None)  # PyJWT writes ["sign"]: the published half would say so too
    jwk = {**exported, "kid": jwk_thumbprint(cast(PublicKey, key.public_key())), "use": "sig"}
    if alg is not None:
        jwk["alg"] = alg
    return jwk


def new_signing_keys() -> list[dict[str, Any]]:
    """An ES256 key (with ``alg``) and an RSA key without ``alg`` (it signs RS256 and PS256)."""
    return [
        _private_jwk(ec.generate_private_key(ec.SECP256R1()), "ES256"),
        _private_jwk(rsa.generate_private_key(public_exponent=65537, key_size=2048), None),
    ]


class NodeOidcProvider:
    """One ``node provider.mjs`` process; :attr:`issuer` is its ``http://127.0.0.1:PORT``."""

    def __init__(self, folder: Path, clients: Sequence[Client], scopes: Sequence[str]) -> None:
        self._folder = folder
        self.port = free_loopback_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.clients = {
            c.client_id: Client(c.client_id, c.scope, c.org_id, c.client_secret or secrets.token_urlsafe(24))
            for c in clients
        }
        self._scopes = list(scopes)
        self.keys = new_signing_keys()
        self._settings = folder / "oidc-provider.json"
        self._write_settings()
        self._lines: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._log = (folder / "oidc-provider.log").open("w", encoding="utf-8")
        self._process = subprocess.Popen(
            ["node", str(PROJECT / "provider.mjs"), str(self._settings)],
            cwd=PROJECT,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, args=(self._process.stdout,), daemon=True)
        self._reader.start()
        self._wait_for("listening", 0)

    def _write_settings(self) -> None:
        scope_all = " ".join(self._scopes)
        settings = {
            "port": self.port,
            "audience": AUDIENCE,
            "access_token_ttl": 600,
            "scopes": self._scopes,
            "clients": [
                {
                    "client_id": c.client_id,
                    "client_secret": c.client_secret,
                    "scope": c.scope,
                    "org_id": c.org_id,
                }
                for c in self.clients.values()
            ],
            "resources": {uri: {"alg": alg, "scope": scope_all} for alg, uri in RESOURCES.items()},
            "jwks": {"keys": self.keys},
        }
        self._settings.write_text(json.dumps(settings), encoding="utf-8")

    def _read(self, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            self._log.write(line)
            self._log.flush()
            if line.startswith("{"):
                with self._changed:
                    self._lines.append(json.loads(line))
                    self._changed.notify_all()

    def _wait_for(self, event: str, already: int) -> None:
        deadline = time.monotonic() + START_SECONDS
        with self._changed:
            while sum(1 for line in self._lines if line.get("event") == event) <= already:
                if self._process.poll() is not None:
                    raise RuntimeError(f"oidc-provider exited ({self._process.returncode}); see its log")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"oidc-provider did not report {event!r} in {START_SECONDS} s")
                self._changed.wait(min(remaining, 0.5))

    def _count(self, event: str) -> int:
        with self._changed:
            return sum(1 for line in self._lines if line.get("event") == event)

    def token(self, client_id: str, alg: str = "ES256", scope: str | None = None) -> str:
        """A JWT access token for ``client_id`` (client_credentials), signed with ``alg``."""
        client = self.clients[client_id]
        body = {
            "grant_type": "client_credentials",
            "resource": RESOURCES[alg],
            "scope": scope or client.scope,
        }
        credentials = base64.b64encode(
            f"{urllib.parse.quote(client.client_id)}:{urllib.parse.quote(client.client_secret)}".encode()
        ).decode()
        request = urllib.request.Request(  # noqa: S310 (our own loopback http:// issuer)
            f"{self.issuer}/token",
            data=urllib.parse.urlencode(body).encode(),
            headers={
                "Authorization": f"Basic {credentials}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback http)
            answer = json.loads(response.read())
        return str(answer["access_token"])

    def rotate(self) -> None:
        """New signing keys, the old ones gone (a rotation without overlap), on the running provider."""
        reloads = self._count("reloaded")
        self.keys = new_signing_keys()
        self._write_settings()
        self._process.send_signal(signal.SIGHUP)
        self._wait_for("reloaded", reloads)

    def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL after 10 s)."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        self._reader.join(timeout=10)
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._log.close()
