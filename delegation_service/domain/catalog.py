"""The scope catalog: which audiences and scopes exist, for which bearers, and which clients may hold them.

The catalog is built once at start-up from plain data (a TOML table) and is immutable afterwards.

Shape of the data::

    delegation_scope = "directory.delegations.rw"
    url_scopes = ["https://api.publiq.be/auth/uitpas"]

    [audiences.directory.scopes]
    person = ["Per"]              # bearer types the scope is available for
    delegations = ["Per", "Org"]

    [clients.billing]
    scopes = ["directory.person.r", "https://api.publiq.be/auth/uitpas"]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from delegation_service.domain.scopes import (
    BearerType,
    Scope,
    ScopeSyntaxError,
    StructuredScope,
    UrlScope,
    parse_scope,
)

DEFAULT_DELEGATION_SCOPE = "directory.delegations.rw"


class CatalogError(ValueError):
    """Raised at start-up when the catalog data is malformed; ``setting`` names the culprit."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"catalog setting {setting!r}: {problem}")
        self.setting = setting
        self.problem = problem


@dataclass(frozen=True)
class Client:
    """A registered subsystem and the scopes it may hold (lattice applies: ``rw`` allows ``r``)."""

    client_id: str
    allowed: tuple[Scope, ...]

    def may_hold(self, scope: Scope) -> bool:
        """Whether the client is allowed ``scope`` (bearer parts are irrelevant here)."""
        return any(granted.covers(scope) for granted in self.allowed)


@dataclass(frozen=True)
class Catalog:
    """Audiences, their scopes with the bearer types each is available for, URL scopes, clients."""

    scopes: Mapping[tuple[str, str], frozenset[BearerType]]
    url_scopes: frozenset[str]
    clients: Mapping[str, Client]
    delegation_scope: StructuredScope
    audiences: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "audiences", frozenset(a for a, _ in self.scopes))

    def is_delegation_scope(self, scope: Scope) -> bool:
        """Whether ``scope`` names the delegation scope, at any permission or bearer."""
        return isinstance(scope, StructuredScope) and scope.key == self.delegation_scope.key

    def bearer_types(self, scope: StructuredScope) -> frozenset[BearerType]:
        """The bearer types a declared structured scope is available for."""
        return self.scopes.get(scope.key, frozenset())

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Catalog:
        """Build and validate a catalog from plain data; raise :class:`CatalogError` on any flaw."""
        delegation_text = data.get("delegation_scope", DEFAULT_DELEGATION_SCOPE)
        delegation = _structured(delegation_text, "delegation_scope")

        scopes: dict[tuple[str, str], frozenset[BearerType]] = {}
        audiences = _table(data.get("audiences", {}), "audiences")
        for audience, body in audiences.items():
            where = f"audiences.{audience}.scopes"
            for name, types in _table(_table(body, f"audiences.{audience}").get("scopes", {}), where).items():
                probe = _structured(f"{audience}.{name}.r", f"{where}.{name}")
                scopes[probe.key] = _bearer_types(types, f"{where}.{name}")
        if delegation.key not in scopes:
            raise CatalogError("delegation_scope", f"{delegation_text!r} is not declared under audiences")

        url_scopes = frozenset(_url(u, "url_scopes") for u in _list(data.get("url_scopes", []), "url_scopes"))

        clients: dict[str, Client] = {}
        for client_id, body in _table(data.get("clients", {}), "clients").items():
            where = f"clients.{client_id}.scopes"
            allowed = tuple(
                _declared(text, where, scopes, url_scopes)
                for text in _list(_table(body, f"clients.{client_id}").get("scopes", []), where)
            )
            clients[client_id] = Client(client_id, allowed)
        return cls(scopes, url_scopes, clients, delegation)


def _table(value: object, setting: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise CatalogError(setting, "must be a table")
    return value


def _list(value: object, setting: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CatalogError(setting, "must be a list of strings")
    return value


def _structured(text: object, setting: str) -> StructuredScope:
    if not isinstance(text, str):
        raise CatalogError(setting, "must be a string")
    try:
        scope = parse_scope(text)
    except ScopeSyntaxError:
        raise CatalogError(setting, f"{text!r} does not match the scope grammar") from None
    if not isinstance(scope, StructuredScope) or scope.bearer is not None:
        raise CatalogError(setting, f"{text!r} must be audience.name.permission")
    return scope


def _url(text: str, setting: str) -> str:
    try:
        scope = parse_scope(text)
    except ScopeSyntaxError:
        raise CatalogError(setting, f"{text!r} is not a valid https:// scope") from None
    if not isinstance(scope, UrlScope):
        raise CatalogError(setting, f"{text!r} is not a URL-form scope")
    return text


def _bearer_types(value: object, setting: str) -> frozenset[BearerType]:
    names = _list(value, setting)
    try:
        types = frozenset(BearerType(n) for n in names)
    except ValueError:
        raise CatalogError(setting, "bearer types must be 'Per' or 'Org'") from None
    if not types:
        raise CatalogError(setting, "must list at least one bearer type")
    return types


def _declared(
    text: str,
    setting: str,
    scopes: Mapping[tuple[str, str], frozenset[BearerType]],
    url_scopes: frozenset[str],
) -> Scope:
    if text.startswith("https://"):
        if text not in url_scopes:
            raise CatalogError(setting, f"{text!r} is not declared in url_scopes")
        return UrlScope(text)
    scope = _structured(text, setting)
    if scope.key not in scopes:
        raise CatalogError(setting, f"{text!r} is not declared under audiences")
    return scope
