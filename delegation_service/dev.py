"""``delegation-service dev``: a self-contained server for trying the service (like ``vault server -dev``).

Loopback only, an in-memory store (or Redis when ``REDIS_URL`` is set), an ephemeral signing key, the
demo catalog, an ephemeral upstream issuer that signs a demo parent token, and a fresh operator secret.
Nothing survives the process.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import sys
from importlib import resources
from pathlib import Path
from typing import TextIO

from delegation_service.app import Application, build_with_demo_parent, operator_token_sha256
from delegation_service.config import Config

DEV_ISSUER = "https://delegation.dev.localhost"
DEMO_SUBJECT = "demo-user"
DEMO_CLIENT = "gateway"
DEMO_SCOPES = (
    "directory.delegations.rw",
    "directory.person.rw",
    "warehouse.items.rw",
    "https://api.publiq.be/auth/uitpas",
)
DEMO_PARENT_LIFETIME = 8 * 3600


def demo_catalog_path() -> Path:
    """The packaged demo catalog."""
    return Path(str(resources.files("delegation_service") / "demo" / "catalog.toml"))


def build_dev(
    port: int, redis_url: str | None, admin_port: int = 0, oauth_port: int = 0
) -> tuple[Application, str, str]:
    """The dev application, its demo parent token and the operator secret."""
    # A recognisable prefix (secret scanners can match it) that also never reads as a CLI option.
    operator_secret = "dso_" + secrets.token_urlsafe(24)
    config = Config(
        listen=f"127.0.0.1:{port}",
        # The banner prints it (DELEGATION_ADMIN_URL); 0 picks a free one.
        admin_listen=f"127.0.0.1:{admin_port}",
        # The OAuth face (DELEGATION_OAUTH_URL): token exchange, introspection, revocation over HTTP.
        oauth_listen=f"127.0.0.1:{oauth_port}",
        issuer=DEV_ISSUER,
        store="redis" if redis_url else "memory",
        redis_url=redis_url or Config.redis_url,
        # A developer's Redis is rarely durable: serve on it anyway; the start-up check logs a warning
        # naming what would be unsafe in production.
        redis_allow_unsafe_persistence=True,
        operator_token_sha256=(operator_token_sha256(operator_secret),),
        # Loopback only (config refuses "open" elsewhere): anyone on this machine may introspect, so
        # the printed commands work without credentials; operator calls still need the secret.
        access_mode="open",
        max_parent_age_seconds=DEMO_PARENT_LIFETIME,
        log_level="INFO",
    ).validate()
    application, parent = build_with_demo_parent(
        config,
        demo_catalog_path(),
        subject=DEMO_SUBJECT,
        scopes=DEMO_SCOPES,
        client_id=DEMO_CLIENT,
        lifetime_seconds=DEMO_PARENT_LIFETIME,
    )
    return application, parent, operator_secret


def print_banner(
    out: TextIO,
    address: str,
    store: str,
    parent: str,
    operator_secret: str,
    *,
    admin_url: str = "",
    oauth_url: str = "",
) -> None:
    """Tell the user what runs and give commands that work as pasted."""
    cli = _cli_name()
    lines = [
        f"delegation-service dev server listening on {address} ({store}; keys and tokens vanish on exit)",
        *(
            [f"Admin HTTP on {admin_url}: /metrics /.well-known/jwks.json /livez /readyz"]
            if admin_url
            else []
        ),
        *(
            [f"OAuth HTTP on {oauth_url}: /oauth2/token /oauth2/introspect /oauth2/revoke"]
            if oauth_url
            else []
        ),
        "",
        f"Demo parent token: subject {DEMO_SUBJECT}, client {DEMO_CLIENT}, scopes {' '.join(DEMO_SCOPES)}",
        "Paste these into another shell:",
        "",
        f"  export DELEGATION_ADDRESS={address}",
        f"  export DELEGATION_PARENT_TOKEN={parent}",
        f"  export DELEGATION_OPERATOR_TOKEN={operator_secret}",
        *([f"  export DELEGATION_ADMIN_URL={admin_url}"] if admin_url else []),
        *([f"  export DELEGATION_OAUTH_URL={oauth_url}"] if oauth_url else []),
        "",
        "  # a child token for the billing subsystem, then look at it and at its chain",
        f"  CHILD=$({cli} delegate --client-id billing --scope warehouse.items.r --print-token)",
        f'  {cli} introspect "$CHILD"',
        f"  {cli} delegate --client-id billing --scope 'Org.warehouse.items.r directory.person.rw'"
        "   # refused, with reasons",
        f'  {cli} chain show --token "$DELEGATION_PARENT_TOKEN"',
        # The child only: revoking the parent's chain here would end the demo for the README's
        # later sections (an operator's chain revocation comes last there).
        f'  {cli} revoke token "$CHILD"',
        f'  {cli} introspect "$CHILD"   # now inactive',
        "",
    ]
    out.write("\n".join(lines) + "\n")
    out.flush()


def _cli_name() -> str:
    """How the user can call this CLI from a shell: by name when on PATH, else by the path it ran from."""
    if shutil.which("delegation-service"):
        return "delegation-service"
    if Path(sys.argv[0]).name == "delegation-service":
        return shlex.quote(_relative(sys.argv[0]))
    return f"{shlex.quote(_relative(sys.executable))} -m delegation_service.cli"


def _relative(path: str) -> str:
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    return relative if relative.startswith("..") or "/" in relative else f"./{relative}"
