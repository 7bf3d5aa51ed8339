"""The registry's Lua scripts: ``.lua`` files shipped as package data, read once, registered on a client.

Each script is a file of its own in ``lua/``, so it is read, diffed and syntax-checked as Lua (a test
loads every file and every assembled script into a real Redis with ``SCRIPT LOAD``). A few helpers
(``extend``, ``publish``, ``children``) are shared: :data:`HELPERS` names the ones each script needs,
and :func:`source` puts them in front of its body (after a ``#!lua`` shebang, which must stay first).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

from redis.commands.core import Script

from delegation_service.adapters.redis.calls import RedisClient

HELPERS: dict[str, tuple[str, ...]] = {
    "mint": ("extend", "children"),
    "snapshot": (),
    "mark": ("extend", "publish"),
    "horizon": ("extend", "publish"),
    "revoke_known_chain": ("extend", "publish", "children"),
    "chain_view": ("children",),
    "publish_event": ("extend", "publish"),
}
"""Every script the registry runs, with the shared helper files it needs, in the order they go in."""


def lua_files() -> dict[str, str]:
    """Every ``.lua`` file of the package (scripts and helpers), by name without the extension."""
    folder = resources.files(__package__).joinpath("lua")
    return {
        entry.name.removesuffix(".lua"): entry.read_text(encoding="utf-8")
        for entry in folder.iterdir()
        if entry.name.endswith(".lua")
    }


@functools.cache
def source(name: str) -> str:
    """The source Redis runs for script ``name``: its helpers, then its body; read from the package once."""
    files = lua_files()
    body = files[name]
    shebang = ""
    if body.startswith("#!"):
        shebang, body = body.split("\n", 1)
        shebang += "\n"
    return shebang + "".join(files[helper] for helper in HELPERS[name]) + body


@dataclass(frozen=True)
class Scripts:
    """The registry's scripts registered on one client.

    ``register_script`` only hashes the source: no round trip here; a :class:`Script` loads itself on its
    first ``NOSCRIPT``.
    """

    mint: Script
    snapshot: Script
    mark: Script
    horizon: Script
    revoke_known_chain: Script
    chain_view: Script
    publish_event: Script

    @classmethod
    def register(cls, client: RedisClient) -> Scripts:
        """Register every script on ``client``."""
        return cls(**{name: client.register_script(source(name)) for name in HELPERS})
