"""What an upstream issuer puts in which claim, and the normalised claims the domain sees.

Providers name the same things differently: scopes in ``scope`` (a space-separated string, RFC 9068),
``scp`` (a list, or a string) or ``roles`` (a list); the client in ``client_id`` (RFC 9068), ``azp``
(OpenID Connect), ``cid`` (Okta) or ``appid`` (Entra v1). A ``client_credentials`` token carries no
bearer at all. A :class:`ClaimMapping` per trusted issuer says where each one is; this module is the one
place that reads them, so the rest of the service only ever sees scopes, a client id and a
:class:`Bearer`. The default mapping is the service's historical reading: ``scope``, else ``scp``;
``client_id``, else ``azp``; the ``bearer`` object, else a person named by ``sub``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from delegation_service.adapters.jws import is_identifier, optional_str, reject
from delegation_service.domain.scopes import Bearer, BearerType

DEFAULT_CLIENT_CLAIMS: tuple[str, ...] = ("client_id", "azp")
"""Where the holding client is named unless configured otherwise: RFC 9068, then OpenID Connect."""

DEFAULT_BEARER_CLAIM = "bearer"
"""The claim holding ``{"type": "Per"|"Org", "id": ...}`` (this service's own children carry it)."""

# The bearer part of the scope grammar (SPEC §2): "Per" or "Org", optionally "/<id>".
_FIXED_BEARER = re.compile(r"(?P<type>Org|Per)(?:/(?P<id>[a-z0-9-]+))?")


class ScopeFormat(enum.Enum):
    """How the scopes claim holds its scopes."""

    STRING = "string"
    """One string, scopes separated by spaces (RFC 6749 §3.3, RFC 9068 ``scope``)."""
    LIST = "list"
    """A JSON array of strings (Okta ``scp``, Entra ``roles``)."""
    LIST_OR_STRING = "list_or_string"
    """Either (Entra puts a string in ``scp``, Okta a list)."""
    OBJECT_KEYS = "object_keys"
    """The keys of a JSON object (ZITADEL's ``urn:zitadel:iam:org:project:roles``: role -> orgs)."""


_DEFAULT_FORMATS: Mapping[str, ScopeFormat] = MappingProxyType(
    {"scope": ScopeFormat.STRING, "scp": ScopeFormat.LIST_OR_STRING, "roles": ScopeFormat.LIST}
)


class ClaimMappingError(ValueError):
    """Raised when a claim mapping is unknown or contradictory; ``setting`` names the offending key."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting
        self.message = message


def parse_fixed_bearer(text: str, setting: str) -> Bearer:
    """``"Org/acme"``, ``"Per/alice"``, ``"Org"`` or ``"Per"`` as a :class:`Bearer`; else an error."""
    match = _FIXED_BEARER.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ClaimMappingError(setting, 'must be "Org/<id>" or "Per/<id>" (id: a-z, 0-9, -), or "Org"/"Per"')
    return Bearer(BearerType(match["type"]), match["id"])


@dataclass(frozen=True)
class ClaimMapping:
    """Where one issuer's tokens hold their scopes, their client and their bearer.

    The bearer of a token is, first match wins: the fixed bearer of its client (``client_bearers``);
    the issuer's fixed ``bearer``; the id in ``bearer_id_claim`` with the type ``bearer_type``; the
    ``bearer_claim`` object; a person named by ``sub``. A configured claim that a token lacks falls
    through to the next rule.
    """

    scopes_claims: tuple[str, ...] | None = None
    """The claims holding the scopes, the first present one wins (Entra: ``scp`` for delegated tokens,
    ``roles`` for app-only ones); ``None``: ``scope`` (a string), else ``scp`` (a list)."""
    scopes_format: ScopeFormat | None = None
    """How the scopes claims hold them; ``None``: ``scope`` string, ``scp`` either, ``roles`` list, any
    other claim either."""
    client_claims: tuple[str, ...] = DEFAULT_CLIENT_CLAIMS
    """The claims naming the holding client, in order; the first present one wins."""
    bearer_claim: str = DEFAULT_BEARER_CLAIM
    """The claim holding a ``{"type": "Per"|"Org", "id": ...}`` object."""
    bearer_id_claim: str | None = None
    """A string claim holding the bearer's id (with ``bearer_type``), e.g. an organisation id claim."""
    bearer_type: BearerType | None = None
    """The bearer type of ``bearer_id_claim``'s id."""
    bearer: Bearer | None = None
    """Every token of the issuer acts for this bearer (a ``client_credentials`` issuer, say)."""
    client_bearers: Mapping[str, Bearer] = field(default_factory=dict)
    """Tokens held by these clients act for these bearers (checked before ``bearer``)."""

    def __post_init__(self) -> None:
        if self.scopes_claims is not None:
            if not self.scopes_claims or not all(self.scopes_claims):
                raise ClaimMappingError("scopes", "must name at least one claim, none empty")
            if len(set(self.scopes_claims)) != len(self.scopes_claims):
                raise ClaimMappingError("scopes", "names a claim twice")
            object.__setattr__(self, "scopes_claims", tuple(self.scopes_claims))
        if self.scopes_format is not None and self.scopes_claims is None:
            raise ClaimMappingError("scopes_format", "needs scopes (the claims it describes)")
        if not self.client_claims or not all(self.client_claims):
            raise ClaimMappingError("client", "must name at least one claim, none empty")
        if len(set(self.client_claims)) != len(self.client_claims):
            raise ClaimMappingError("client", "names a claim twice")
        if not self.bearer_claim:
            raise ClaimMappingError("bearer_claim", "must name a claim")
        if self.bearer_id_claim is not None and not self.bearer_id_claim:
            raise ClaimMappingError("bearer_id_claim", "must name a claim")
        if (self.bearer_id_claim is None) != (self.bearer_type is None):
            raise ClaimMappingError(
                "bearer_type" if self.bearer_id_claim is None else "bearer_id_claim",
                "bearer_id_claim and bearer_type go together",
            )
        if self.bearer is not None and self.bearer_id_claim is not None:
            raise ClaimMappingError("bearer", "give a fixed bearer or bearer_id_claim, not both")
        for client in self.client_bearers:
            if not is_identifier(client):
                raise ClaimMappingError("client_bearers", "client ids must be non-empty printable strings")
        object.__setattr__(self, "client_claims", tuple(self.client_claims))
        object.__setattr__(self, "client_bearers", MappingProxyType(dict(self.client_bearers)))

    def with_actor_claim(self, actor_claim: str | None) -> ClaimMapping:
        """This mapping with the legacy ``actor_claim`` appended to the default client claims."""
        if actor_claim is None or self.client_claims == (*DEFAULT_CLIENT_CLAIMS, actor_claim):
            return self
        if self.client_claims != DEFAULT_CLIENT_CLAIMS:
            raise ClaimMappingError("client", "give claims.client or actor_claim, not both")
        return ClaimMapping(
            scopes_claims=self.scopes_claims,
            scopes_format=self.scopes_format,
            client_claims=(*DEFAULT_CLIENT_CLAIMS, actor_claim),
            bearer_claim=self.bearer_claim,
            bearer_id_claim=self.bearer_id_claim,
            bearer_type=self.bearer_type,
            bearer=self.bearer,
            client_bearers=self.client_bearers,
        )

    def settings(self) -> dict[str, object]:
        """The mapping as the ``[trusted_issuers.claims]`` keys that would configure it (for reports)."""
        report: dict[str, object] = {"client": list(self.client_claims), "bearer_claim": self.bearer_claim}
        if self.scopes_claims is not None:
            report["scopes"] = list(self.scopes_claims)
            if self.scopes_format is not None:
                report["scopes_format"] = self.scopes_format.value
        if self.bearer_id_claim is not None and self.bearer_type is not None:
            report["bearer_id_claim"] = self.bearer_id_claim
            report["bearer_type"] = self.bearer_type.value
        if self.bearer is not None:
            report["bearer"] = str(self.bearer)
        if self.client_bearers:
            report["client_bearers"] = {client: str(b) for client, b in self.client_bearers.items()}
        return report

    def _format(self, claim: str) -> ScopeFormat:
        if self.scopes_format is not None:
            return self.scopes_format
        return _DEFAULT_FORMATS.get(claim, ScopeFormat.LIST_OR_STRING)

    def scopes(self, payload: Mapping[str, Any]) -> tuple[str, ...]:
        """The token's scopes, duplicates collapsed, in order; ``()`` when no scopes claim is present."""
        if self.scopes_claims is None:
            return default_scopes(payload)
        for claim in self.scopes_claims:
            if claim in payload:
                return _read_scopes(payload, claim, self._format(claim))
        return ()

    def client(self, payload: Mapping[str, Any]) -> str:
        """The client that holds the token (SPEC §5); empty when no claim names it (the service then
        refuses to delegate from it)."""
        for name in self.client_claims:
            value = optional_str(payload, name)
            if value:
                return value
        return ""

    def bearer_of(self, payload: Mapping[str, Any], subject: str, client: str) -> Bearer:
        """Who the token acts for (see the class docstring for the order of the rules)."""
        fixed = self.client_bearers.get(client) if client else None
        if fixed is not None:
            return fixed
        if self.bearer is not None:
            return self.bearer
        if self.bearer_id_claim is not None and self.bearer_type is not None:
            bearer_id = optional_str(payload, self.bearer_id_claim)
            if bearer_id is not None:
                return Bearer(self.bearer_type, bearer_id)
        claimed = bearer_claim(payload, self.bearer_claim)
        return claimed if claimed is not None else Bearer(BearerType.PERSON, subject)


DEFAULT_MAPPING = ClaimMapping()
"""Today's reading of an upstream token (see the module docstring)."""


def default_scopes(payload: Mapping[str, Any]) -> tuple[str, ...]:
    """Scopes from ``scope`` (space-separated string, RFC 9068) or else ``scp`` (a list of strings)."""
    if "scope" in payload:
        return _read_scopes(payload, "scope", ScopeFormat.STRING)
    return _read_scopes(payload, "scp", ScopeFormat.LIST)


def _read_scopes(payload: Mapping[str, Any], name: str, form: ScopeFormat) -> tuple[str, ...]:
    if name not in payload:
        return ()
    value = payload[name]
    if form is ScopeFormat.OBJECT_KEYS:
        if not isinstance(value, dict):
            reject(f"malformed {name}")
        value = list(value)
    elif isinstance(value, str) and form is not ScopeFormat.LIST:
        if not value.isprintable():
            reject(f"malformed {name}")
        return tuple(dict.fromkeys(piece for piece in value.split(" ") if piece))
    if not isinstance(value, list) or form is ScopeFormat.STRING:
        reject(f"malformed {name}")
    if not all(is_identifier(item) for item in value):
        reject(f"malformed {name}")
    return tuple(dict.fromkeys(value))


def bearer_claim(payload: Mapping[str, Any], name: str = DEFAULT_BEARER_CLAIM) -> Bearer | None:
    """The bearer object claim ``{"type": "Per"|"Org", "id": ...}``, or ``None`` when absent."""
    if name not in payload:
        return None
    claim = payload[name]
    if not isinstance(claim, dict):
        reject("malformed bearer")
    try:
        bearer_type = BearerType(claim.get("type"))
    except ValueError:
        reject("malformed bearer type")
    bearer_id = claim.get("id")
    if bearer_id is not None and not is_identifier(bearer_id):
        reject("malformed bearer id")
    return Bearer(bearer_type, bearer_id)
