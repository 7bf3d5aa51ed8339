"""Scope grammar and the permission lattice (SPEC §2).

Two forms exist:

* structured scopes ``[BEARER_TYPE_AND_ID.]AUDIENCE.SCOPE_NAME.PERMISSION`` (seed 002), matched against
  the whole string, case-sensitive, with no trimming or folding;
* URL-form scopes such as ``https://api.publiq.be/auth/uitpas`` (seed 000): opaque, matched exactly.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

MAX_SCOPE_LENGTH = 256
"""Longer strings are refused before any regular expression runs on them."""
PARSE_CACHE_SIZE = 4096
"""Scope strings whose parse is kept (least recently used dropped first; each at most 256 characters)."""

_STRUCTURED = re.compile(
    r"(?:(?P<bearer_type>Org|Per)(?:/(?P<bearer_id>[a-z0-9-]+))?\.)?"
    r"(?P<audience>[a-z][a-z0-9_]{2,})\.(?P<name>[a-z][a-z_]{2,})\.(?P<permission>rw|r)"
)
# Printable ASCII only: no whitespace, no look-alikes, nothing to normalise.
_URL_FORM = re.compile(r"https://[!-~]+")


class BearerType(enum.Enum):
    """Who a token is for: a person or an organisation; the value is the grammar's prefix."""

    PERSON = "Per"
    ORGANIZATION = "Org"


@dataclass(frozen=True)
class Bearer:
    """The bearer of a token: its type and, when known, its id."""

    type: BearerType
    id: str | None = None

    def __str__(self) -> str:
        return self.type.value if self.id is None else f"{self.type.value}/{self.id}"


class Permission(enum.Enum):
    """The permission lattice: ``rw`` covers ``r``; ``r`` covers only ``r``."""

    READ = "r"
    READ_WRITE = "rw"

    def covers(self, other: Permission) -> bool:
        """Whether holding ``self`` implies holding ``other``."""
        return self is other or self is Permission.READ_WRITE


@dataclass(frozen=True)
class StructuredScope:
    """A parsed ``[bearer.]audience.name.permission`` scope.

    ``bearer`` is ``None`` when the string had no bearer part (which means ``Per``).
    """

    audience: str
    name: str
    permission: Permission
    bearer: Bearer | None = None

    @property
    def bearer_type(self) -> BearerType:
        """The bearer type the scope asks for; an omitted bearer means a person."""
        return BearerType.PERSON if self.bearer is None else self.bearer.type

    @property
    def key(self) -> tuple[str, str]:
        """The catalog key of the scope: ``(audience, name)``."""
        return (self.audience, self.name)

    def __str__(self) -> str:
        """The scope as returned to callers: never with a bearer prefix (seed 002)."""
        return f"{self.audience}.{self.name}.{self.permission.value}"

    def with_permission(self, permission: Permission) -> StructuredScope:
        """The same scope at another permission."""
        return StructuredScope(self.audience, self.name, permission, self.bearer)

    def without_bearer(self) -> StructuredScope:
        """The same scope with its bearer part dropped."""
        return StructuredScope(self.audience, self.name, self.permission)

    def covers(self, other: Scope) -> bool:
        """Whether this (granted) scope implies ``other`` under the lattice; bearers are ignored."""
        return (
            isinstance(other, StructuredScope)
            and self.key == other.key
            and self.permission.covers(other.permission)
        )


@dataclass(frozen=True)
class UrlScope:
    """An opaque URL-form API scope, matched exactly."""

    url: str

    def __str__(self) -> str:
        return self.url

    def covers(self, other: Scope) -> bool:
        """URL scopes cover only themselves."""
        return self == other


Scope = StructuredScope | UrlScope


class ScopeSyntaxError(ValueError):
    """Raised by :func:`parse_scope` when a string is neither a structured nor a URL-form scope."""

    def __init__(self, text: str) -> None:
        super().__init__("the scope does not match the scope grammar")
        self.text = text


def parse_scope(text: str) -> Scope:
    """Parse one scope string, or raise :class:`ScopeSyntaxError`.

    Valid parses are cached (they are immutable values); a string that does not parse is checked again
    each time, and nothing longer than :data:`MAX_SCOPE_LENGTH` reaches the cache.
    """
    if not text or len(text) > MAX_SCOPE_LENGTH:
        raise ScopeSyntaxError(text)
    return _parse(text)


@functools.lru_cache(maxsize=PARSE_CACHE_SIZE)
def _parse(text: str) -> Scope:
    if text.startswith("https://"):
        if _URL_FORM.fullmatch(text):
            return UrlScope(text)
        raise ScopeSyntaxError(text)
    match = _STRUCTURED.fullmatch(text)
    if match is None:
        raise ScopeSyntaxError(text)
    bearer_type = match.group("bearer_type")
    bearer = None if bearer_type is None else Bearer(BearerType(bearer_type), match.group("bearer_id"))
    return StructuredScope(
        audience=match.group("audience"),
        name=match.group("name"),
        permission=Permission(match.group("permission")),
        bearer=bearer,
    )


def split_scopes(entries: Iterable[str]) -> list[tuple[int, str]]:
    """Flatten request entries that may each hold several space-separated scopes (seed 000).

    Returns each distinct scope with the index of the entry it came from; duplicates collapse, keeping
    the first occurrence's order. An entry splits on single ASCII spaces only (RFC 6749 §3.3); an entry
    that is empty, whitespace only, or spaced otherwise (leading, trailing or doubled) is kept whole, so
    that it fails the grammar as ``invalid_scope_structure`` at its index (SPEC §2: fail closed, never
    "no scopes"). Other whitespace stays inside a scope and makes it invalid too.
    """
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        pieces = entry.split(" ")
        for piece in pieces if all(pieces) else [entry]:
            seen.setdefault(piece, index)
    return [(index, text) for text, index in seen.items()]


def format_scopes(scopes: Iterable[Scope]) -> str:
    """The space-separated ``scope`` claim value: no bearer prefixes, no duplicates."""
    return " ".join(dict.fromkeys(str(s) for s in scopes))
