"""What every bench process shares: names, keys on disk, free ports, CPU clocks and a private Redis."""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from delegation_service.adapters.keys import SigningKey
from delegation_service.transport.oauth.endpoints import ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE

UPSTREAM_ISSUER = "https://idp.bench.invalid"
SERVICE_ISSUER = "https://delegation.bench.invalid"
SERVICE_KEY_PREFIX = "bench"
"""The service's Redis key prefix in the bench (the minimal Introspect reads the same keys)."""
FLOOR_KEY_PREFIX = "benchfloor"
"""Where the minimal Delegate writes, apart from the service's keys."""

DELEGATION_SCOPE = "directory.delegations.rw"
PARENT_CLIENT = "gateway"
PARENT_SCOPES = (DELEGATION_SCOPE, "directory.person.rw", "warehouse.items.rw")
CHILD_CLIENT = "billing"
CHILD_SCOPES = ("warehouse.items.r",)
PARENT_LIFETIME_SECONDS = 3600
CHILD_LIFETIME_SECONDS = 900
SUBJECTS = 64
"""Parents are spread over this many subjects (so over as many subject horizons)."""

ECHO_METHOD = "/bench.Echo/Echo"


def token_exchange_body(parent: str) -> bytes:
    """An RFC 8693 token request (a form body) for the child a bench ``Delegate`` asks for."""
    return urllib.parse.urlencode(
        {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": parent,
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "audience": CHILD_CLIENT,
            "scope": " ".join(CHILD_SCOPES),
        }
    ).encode()


def subject_for(index: int) -> str:
    """The subject of the ``index``-th parent."""
    return f"bench-user-{index % SUBJECTS}"


def write_private_key(key: SigningKey, path: Path) -> None:
    """Write ``key`` as PKCS#8 PEM, readable by its owner only (an ephemeral bench key)."""
    pem = key.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.touch(mode=0o600, exist_ok=True)
    path.write_bytes(pem)


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (every thread of it), from ``/proc/<pid>/stat``."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces and parentheses: fields after it start past the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _CLOCK_TICKS


def loadavg() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages."""
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return float(one), float(five), float(fifteen)


PEER_CLIENT_ID = "bench-peer"
PEER_CLIENT_SECRET = "bench-peer-secret"  # a loopback bench client: nothing to keep secret
"""The confidential client the load generator authenticates as at the peer (``client_secret_basic``)."""
PEER_RESOURCE = "urn:delegation-bench:api"
PEER_SCOPES = CHILD_SCOPES
"""What each grant asks the peer for: the same scope a bench child gets."""
