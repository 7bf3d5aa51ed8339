"""Fetch one small JSON document over HTTPS (plain HTTP on loopback only), bounded in size and time.

Used for an identity provider's OpenID Connect metadata and JWKS (SPEC §3 rule 1). The standard
library's ``http.client`` is enough, and keeps the rules in view: no proxy, no cookies, redirects
followed only on the same scheme, host and port, a size cap read before parsing, and one deadline for
the whole exchange (a server that drips one byte a second cannot hold a refresh for longer).
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import re
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

MAX_REDIRECTS = 3

_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d{1,10})\"?\s*(?:,|$)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*(?:no-cache|no-store)\s*(?:,|$)", re.IGNORECASE)
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 16384


class FetchError(Exception):
    """A remote document could not be fetched or is not the JSON object expected; ``reason`` is a
    short fixed label (for metrics), the message says more (for the log)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class FetchLimits:
    """How much a fetch may cost."""

    timeout_seconds: float = 5.0
    """For the whole exchange: connect, TLS, headers and body, redirects included."""
    max_bytes: int = 1_048_576
    """Largest body accepted; a JWKS of a few dozen RSA keys is well under 100 KiB."""


@dataclass(frozen=True)
class Fetched:
    """A fetched JSON object and how long the server said it may be cached."""

    document: dict[str, Any]
    max_age_seconds: int | None
    """``Cache-Control: max-age``; 0 for ``no-cache``/``no-store``; ``None`` when the server says nothing."""


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` names this machine (the only place plain HTTP is allowed)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_fetch_url(url: str) -> None:
    """Raise ``ValueError`` unless ``url`` is ``https://host/...`` or ``http://`` to a loopback host.

    The one home of this rule: the config refuses such a URL at start-up, the fetcher on every request
    (a redirect or a metadata document names URLs too).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("must be an https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError("plain http:// is allowed only to a loopback address; use https://")


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Certificates checked against ``ca_file`` when given, else the system trust store."""
    return ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)


def fetch_json(url: str, limits: FetchLimits, context: ssl.SSLContext) -> Fetched:
    """GET ``url`` and parse a JSON object; raise :class:`FetchError` for anything else."""
    deadline = time.monotonic() + limits.timeout_seconds
    origin = urlsplit(url)
    for _ in range(MAX_REDIRECTS + 1):
        try:
            check_fetch_url(url)
        except ValueError as error:
            raise FetchError("url", f"{url}: {error}") from None
        parts = urlsplit(url)
        if (parts.scheme, parts.hostname, parts.port) != (origin.scheme, origin.hostname, origin.port):
            raise FetchError("redirect", "redirect to another scheme, host or port refused")
        status, headers, body = _get(parts, limits, context, deadline)
        if status in _REDIRECTS:
            location = headers.get("location")
            if not location:
                raise FetchError("http_status", f"HTTP {status} without Location")
            url = urljoin(url, location)
            continue
        if status != 200:
            raise FetchError("http_status", f"HTTP {status}")
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise FetchError("invalid_json", "the response is not JSON") from None
        if not isinstance(document, dict):
            raise FetchError("invalid_json", "the response is not a JSON object")
        return Fetched(document, _max_age(headers.get("cache-control", "")))
    raise FetchError("redirect", "too many redirects")


def _get(
    parts: Any, limits: FetchLimits, context: ssl.SSLContext, deadline: float
) -> tuple[int, dict[str, str], bytes]:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise FetchError("timeout", "timed out")
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=remaining, context=context
        )
    else:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=remaining)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:
        connection.request(
            "GET", path, headers={"Accept": "application/json", "User-Agent": "delegation-service"}
        )
        response = connection.getresponse()
        headers = {name.lower(): value for name, value in response.getheaders()}
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limits.max_bytes:
            raise FetchError("too_large", f"response larger than {limits.max_bytes} bytes")
        body = bytearray()
        while True:
            if time.monotonic() > deadline:
                raise FetchError("timeout", "timed out reading the response")
            # Each read waits at most the time left (a slow drip cannot outlast the deadline).
            if connection.sock is not None:
                connection.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = response.read1(_CHUNK)
            if not chunk:
                break
            body += chunk
            if len(body) > limits.max_bytes:
                raise FetchError("too_large", f"response larger than {limits.max_bytes} bytes")
        return response.status, headers, bytes(body)
    except FetchError:
        raise
    except TimeoutError:
        raise FetchError("timeout", "timed out") from None
    except ssl.SSLError as error:
        raise FetchError("tls", f"TLS: {error.reason or error}") from None
    except (OSError, http.client.HTTPException) as error:
        raise FetchError("unreachable", f"{type(error).__name__}: {error}") from None
    finally:
        connection.close()


def _max_age(cache_control: str) -> int | None:
    if _NO_CACHE.search(cache_control):
        return 0
    match = _MAX_AGE.search(cache_control)
    return int(match.group(1)) if match else None
