"""A real peer for ``make bench``: panva's ``oidc-provider`` (Node), a certified OpenID provider.

It issues ES256 JWT access tokens for ``client_credentials`` with a resource indicator: what a platform
team would compare ``Delegate`` with. Per call it authenticates the client (``client_secret_basic``),
checks the scope and resource, signs a JWT and answers; it verifies no parent token, stores nothing
and logs nothing, where ``Delegate`` verifies a parent, checks the policy, records the child in Redis
(one round trip) and writes an audit line.

The Node project in ``bench/peer/`` pins the provider (``package-lock.json``); ``npm ci`` installs it on
first use. Without ``node`` and ``npm`` the peer is skipped and the run says so in one line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.common import PEER_CLIENT_ID, PEER_CLIENT_SECRET
from devtools.redis_server import stop_process

PROJECT = Path(__file__).resolve().parent / "peer"
START_TIMEOUT_SECONDS = 30.0
INSTALL_TIMEOUT_SECONDS = 300.0


class PeerUnavailable(RuntimeError):
    """The peer cannot run here (no Node, or its install failed); the message says why, in one line."""


def _install(npm: str) -> None:
    installed = PROJECT / "node_modules" / ".package-lock.json"
    if installed.exists() and installed.stat().st_mtime >= (PROJECT / "package-lock.json").stat().st_mtime:
        return
    completed = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_SECONDS,
        check=False,
    )
    if completed.returncode != 0:
        last = (completed.stderr or completed.stdout).strip().splitlines()[-1:] or ["no output"]
        raise PeerUnavailable(f"npm ci in bench/peer failed: {last[0]}")


def start(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Install (once) and start the peer on a free loopback port; the process and its port."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise PeerUnavailable("node and npm are not installed (Debian: apt-get install nodejs npm)")
    _install(npm)
    ready = workdir / "peer.ready"
    log = (workdir / "peer.log").open("wb")
    process = subprocess.Popen(
        [node, "server.mjs", "0", str(ready), PEER_CLIENT_ID, PEER_CLIENT_SECRET],
        cwd=PROJECT,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PeerUnavailable(f"the peer exited at start; see {workdir / 'peer.log'}")
        if ready.exists() and ready.read_text().strip():
            return process, int(ready.read_text().split()[0])
        time.sleep(0.05)
    stop_process(process)
    raise PeerUnavailable(f"the peer did not start within {START_TIMEOUT_SECONDS:.0f} s")


def describe(skipped: str) -> dict[str, Any]:
    """What the results say about the peer: its pinned version, or why it did not run."""
    lock = json.loads((PROJECT / "package-lock.json").read_text())
    version = lock["packages"].get("node_modules/oidc-provider", {}).get("version")
    return {
        "name": "oidc-provider (Node)",
        "version": version,
        "grant": "client_credentials, client_secret_basic, resource indicator, ES256 JWT access token",
        "skipped": skipped or None,
    }
