"""A small OpenID-Connect-style provider on loopback, for tests and benchmarks: discovery and a JWKS.

It serves ``<issuer>/.well-known/openid-configuration`` and ``<issuer>/jwks``, signs access tokens
with the keys it publishes, and lets a test rotate those keys, change what the metadata says, and make
the JWKS misbehave (down, garbage, huge, slow). It counts the requests it answers, per document, so a
test can assert how many fetches the service made. No OIDC provider library fits this (they need a
web framework, a database and a login flow, and none can be told to misbehave); this is ~150 lines.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Sequence
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

from delegation_service.adapters.jws import ACCESS_TOKEN_TYP
from delegation_service.adapters.jwt_codec import compact_jws
from delegation_service.adapters.keys import SigningKey, generate_signing_key

LOOPBACK = "127.0.0.1"
REALM_PATH = "/realms/test"
SLOW_DRIP_MAX_SECONDS = 10.0
"""A slow response gives up after this long even if the client never does (bounded tests)."""


class JwksMode(Enum):
    """How the JWKS endpoint answers."""

    OK = "ok"
    DOWN = "down"
    """HTTP 503."""
    RESET = "reset"
    """The connection is closed without an answer."""
    GARBAGE = "garbage"
    """200 with a body that is not JSON."""
    HUGE = "huge"
    """200 with a body far above any sane JWKS (4 MiB), no Content-Length (chunk by chunk)."""
    SLOW = "slow"
    """200 with the JWKS dripped one byte every 100 ms."""


class OidcProvider:
    """The provider; ``issuer`` is its URL. Thread-safe; ``stop()`` when done."""

    def __init__(self, keys: Sequence[SigningKey] | None = None) -> None:
        self._lock = threading.Lock()
        self.keys: list[SigningKey] = list(keys) if keys is not None else [generate_signing_key("ES256")]
        self.signing_key: SigningKey = self.keys[0]
        self.mode = JwksMode.OK
        self.metadata_issuer: str | None = None
        """When set, the discovery document names this issuer instead of the real one."""
        self.cache_control: str | None = "max-age=300"
        self.extra_jwks: list[dict[str, Any]] = []
        """Public JWKs published beside ``keys`` (keys of another library, in interop tests)."""
        self.requests: Counter[str] = Counter()
        handler = type("Handler", (_Handler,), {"provider": self})
        self._server = ThreadingHTTPServer((LOOPBACK, 0), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.issuer = f"http://{LOOPBACK}:{self.port}{REALM_PATH}"
        self.jwks_uri = f"{self.issuer}/jwks"
        self._thread = threading.Thread(target=self._server.serve_forever, name="oidc-provider", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def rotate(self, publish: Sequence[SigningKey], sign_with: SigningKey) -> None:
        """Publish exactly ``publish`` from now on, and sign new tokens with ``sign_with``."""
        with self._lock:
            self.keys = list(publish)
            self.signing_key = sign_with

    def count(self, document: str) -> int:
        """Requests answered for ``"discovery"`` or ``"jwks"``."""
        with self._lock:
            return self.requests[document]

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The JWK Set published now."""
        with self._lock:
            return {"keys": [*(dict(key.public_jwk) for key in self.keys), *self.extra_jwks]}

    def mint(
        self,
        subject: str = "alice",
        scopes: Sequence[str] = ("directory.delegations.rw", "directory.person.rw"),
        client_id: str = "gateway",
        lifetime_seconds: int = 3600,
        key: SigningKey | None = None,
        **claims: Any,
    ) -> str:
        """An access token of this issuer, signed with ``key`` (default: the current signing key)."""
        key = key if key is not None else self.signing_key
        now = int(time.time())
        payload = {
            "iss": self.issuer,
            "sub": subject,
            "client_id": client_id,
            "scope": " ".join(scopes),
            "iat": now,
            "exp": now + lifetime_seconds,
            "jti": secrets.token_urlsafe(12),
            **claims,
        }
        header = {"alg": key.alg, "kid": key.kid, "typ": ACCESS_TOKEN_TYP}
        return compact_jws(header, json.dumps(payload).encode(), key)


class _Handler(BaseHTTPRequestHandler):
    provider: ClassVar[OidcProvider]

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests read counts, not logs

    def do_GET(self) -> None:
        provider = self.provider
        if self.path == f"{REALM_PATH}/.well-known/openid-configuration":
            with provider._lock:
                provider.requests["discovery"] += 1
            issuer = provider.metadata_issuer or provider.issuer
            body = {
                "issuer": issuer,
                "jwks_uri": provider.jwks_uri,
                "id_token_signing_alg_values_supported": ["ES256"],
            }
            self._send_json(body)
        elif self.path == f"{REALM_PATH}/jwks":
            with provider._lock:
                provider.requests["jwks"] += 1
                mode = provider.mode
            self._jwks(mode)
        else:
            self.send_error(404)

    def _jwks(self, mode: JwksMode) -> None:
        if mode is JwksMode.DOWN:
            self.send_error(503)
        elif mode is JwksMode.RESET:
            self.close_connection = True
            self.connection.close()
        elif mode is JwksMode.GARBAGE:
            self._send(b"<html>not a JWKS</html>", "text/html")
        elif mode is JwksMode.HUGE:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            chunk = b" " * 65536
            try:
                for _ in range(64):  # 4 MiB, bounded
                    self.wfile.write(chunk)
            except OSError:
                pass  # the client gave up, as it should
        elif mode is JwksMode.SLOW:
            body = json.dumps(self.provider.jwks()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            deadline = time.monotonic() + SLOW_DRIP_MAX_SECONDS
            try:
                for byte in body:
                    if time.monotonic() > deadline:
                        break
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass
        else:
            self._send_json(self.provider.jwks())

    def _send_json(self, document: object) -> None:
        self._send(json.dumps(document).encode(), "application/json")

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.provider.cache_control is not None:
            self.send_header("Cache-Control", self.provider.cache_control)
        self.end_headers()
        self.wfile.write(body)
