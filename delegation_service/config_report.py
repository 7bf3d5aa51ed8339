"""The effective configuration as ``config check`` prints it: every setting's value, secrets masked.

Masked: the operator secrets' digests (a SHA-256 of a short or guessable secret can be brute-forced, and
a config dump lands in tickets and CI logs) and the password of any URL (``redis://user:pw@host``).
File paths are shown: they name where a secret is, not the secret.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from delegation_service.adapters.jwt_codec import IssuerRules
from delegation_service.adapters.upstream_claims import ClaimMapping
from delegation_service.config import Config, TrustedIssuer, settings

MASK = "****"
SECRET_SETTINGS = frozenset({"operators.token_sha256"})
"""Settings whose every value is masked (one home: the rest are shown, URLs without their password)."""


def effective(config: Config) -> dict[str, Any]:
    """Each setting's TOML path and its value as JSON-ready data, secrets masked."""
    report: dict[str, Any] = {}
    for setting in settings():
        path: str = setting.metadata["path"]
        value = getattr(config, setting.name)
        report[path] = _masked_all(value) if path in SECRET_SETTINGS else _plain(value)
    return report


def render_text(config: Config) -> str:
    """``path = value`` lines (TOML-like values), in declaration order."""
    lines = []
    for path, value in effective(config).items():
        lines.append(f"{path} = {_toml(value)}")
    return "\n".join(lines) + "\n"


def _masked_all(value: Any) -> Any:
    if isinstance(value, tuple):
        return [MASK for _ in value]
    return MASK if value else value


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    if isinstance(value, TrustedIssuer):
        return _table(value)
    if isinstance(value, ClaimMapping):
        return value.settings()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str):
        return mask_url_password(value)
    return value


def _table(value: TrustedIssuer | IssuerRules) -> dict[str, Any]:
    """A ``[[trusted_issuers]]`` table's keys and values; its rules are keys of the table, as in TOML."""
    report: dict[str, Any] = {}
    for item in dataclasses.fields(value):
        member = getattr(value, item.name)
        report.update(_table(member) if isinstance(member, IssuerRules) else {item.name: _plain(member)})
    return report


def mask_url_password(text: str) -> str:
    """``redis://user:secret@host/0`` -> ``redis://user:****@host/0``; anything else unchanged."""
    if "://" not in text or "@" not in text:
        return text
    try:
        parts = urlsplit(text)
        password = parts.password
    except ValueError:
        return text
    if not password:
        return text
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return parts._replace(netloc=f"{user}:{MASK}@{host}").geturl()


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, dict):
        return (
            "{ "
            + ", ".join(f"{key} = {_toml(item)}" for key, item in value.items() if item is not None)
            + " }"
        )
    if value is None:
        return '""  # unset'
    return str(value)
