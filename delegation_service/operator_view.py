"""How the operator commands show a chain on a terminal: a table whose first column draws the tree.

Only the CLI imports this (``rich`` is loaded when a command needs it, not at start-up). ``--output json``
never comes here: scripts get the protobuf message as JSON, unchanged.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import TextIO

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from delegation.v1 import admin_pb2, delegation_pb2

PLAIN_WIDTH = 160
"""Line width when the output is not a terminal (a pipe, a file, CI logs): wide enough for one token per
line, so tools like grep see whole rows."""

_STATE_STYLES = {
    admin_pb2.TOKEN_STATE_ACTIVE: ("active", "bold green"),
    admin_pb2.TOKEN_STATE_REVOKED: ("revoked", "bold red"),
    admin_pb2.TOKEN_STATE_EXPIRED: ("expired", "dim"),
    admin_pb2.TOKEN_STATE_UNSPECIFIED: ("unknown", "yellow"),
}
_KINDS = {
    delegation_pb2.TOKEN_KIND_UPSTREAM: "upstream",
    delegation_pb2.TOKEN_KIND_DELEGATED: "delegated",
}


SHORT_ID_LENGTH = 8
"""Characters of a token id shown on a terminal (like git's short hashes), more if two would clash."""
_ELLIPSIS = "…"


def is_terminal(out: TextIO) -> bool:
    """Whether ``out`` is a terminal a person reads (Rich's test: a TTY, or FORCE_COLOR / TTY_COMPATIBLE)."""
    return Console(file=out).is_terminal


def console(out: TextIO, wide: bool = False) -> Console:
    """A console on ``out``: colours on a terminal (unless NO_COLOR), plain fixed-width text elsewhere.

    ``wide`` lets lines grow past the terminal's width (at least :data:`PLAIN_WIDTH`), for whole ids
    and timestamps: pipe it to ``less -S`` on a narrow terminal.
    """
    probe = Console(file=out)
    width = None if probe.is_terminal else PLAIN_WIDTH
    if wide:
        width = max(probe.width, PLAIN_WIDTH)
    return Console(file=out, highlight=False, width=width)


def short_ids(token_ids: Sequence[str], length: int = SHORT_ID_LENGTH) -> dict[str, str]:
    """Each id cut to one length, at least ``length``, at which no two ids of the list share a prefix.

    Like git's abbreviated hashes: enough to recognise a token in the table, and to tell it from the
    others of the same chain; ``--wide`` or ``--output json`` gives the whole ids to copy.
    """
    unique = set(token_ids)
    while length < max((len(token_id) for token_id in unique), default=0):
        if len({token_id[:length] for token_id in unique}) == len(unique):
            break
        length += 1
    return {
        token_id: token_id if len(token_id) <= length + 1 else token_id[:length] + _ELLIPSIS
        for token_id in unique
    }


def render_chain(
    chain: admin_pb2.GetChainResponse, out: Console, now: float | None = None, *, wide: bool = False
) -> None:
    """Print a chain: a headline, the tokens as a tree-shaped table, and a one-line summary.

    Sized for the terminal (80 columns is enough): token ids abbreviated, expiry as a relative time,
    one scope per line. ``wide`` shows whole ids and timestamps instead.
    """
    now = time.time() if now is None else now
    headline = Text(f"Chain {chain.chain_id}  ")
    headline.append("REVOKED" if chain.revoked else "not revoked", "bold red" if chain.revoked else "green")
    out.print(headline)

    ids = (
        {t.token_id: t.token_id for t in chain.tokens}
        if wide
        else short_ids([t.token_id for t in chain.tokens])
    )
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True)
    table.add_column("Token", no_wrap=True)
    table.add_column("Kind", no_wrap=True)
    table.add_column("State", no_wrap=True)
    table.add_column("Client", overflow="fold")
    table.add_column("Scopes", overflow="fold", min_width=12)
    table.add_column("Expires", no_wrap=True)
    for prefix, token in tree_order(chain.tokens):
        label, style = _STATE_STYLES.get(token.state, ("unknown", "yellow"))
        expires = relative(token.expire_time.seconds - now)
        table.add_row(
            Text(prefix, "dim") + Text(ids[token.token_id]),
            _KINDS.get(token.kind, "?"),
            Text(label, style),
            token.client_id or "-",
            "\n".join(token.scopes),
            f"{token.expire_time.ToJsonString()} ({expires})" if wide else expires,
        )
    out.print(table)
    out.print(summary(chain.tokens))
    if not wide and any(ids[t.token_id] != t.token_id for t in chain.tokens):
        out.print(Text("(ids abbreviated: --wide or --output json shows them whole)", "dim"))


def render_chain_plain(chain: admin_pb2.GetChainResponse, out: TextIO, now: float | None = None) -> None:
    """The chain for a pipe or a file: no colour, no table, one tab-separated line per token.

    The same headline, header, rows (tree glyphs kept, so the shape survives) and summary as the table,
    but with fields that ``cut -f`` and ``awk -F'\\t'`` split reliably and lines never wrapped.
    """
    now = time.time() if now is None else now
    lines = [
        f"Chain {chain.chain_id}  {'REVOKED' if chain.revoked else 'not revoked'}",
        "\t".join(("Token", "Kind", "State", "Client", "Scopes", "Expires")),
    ]
    for prefix, token in tree_order(chain.tokens):
        label, _ = _STATE_STYLES.get(token.state, ("unknown", ""))
        fields = (
            prefix + token.token_id,
            _KINDS.get(token.kind, "?"),
            label,
            token.client_id or "-",
            " ".join(token.scopes),
            f"{token.expire_time.ToJsonString()} ({relative(token.expire_time.seconds - now)})",
        )
        lines.append("\t".join(fields))
    lines.append(summary(chain.tokens).plain)
    out.write("\n".join(lines) + "\n")


def tree_order(tokens: Sequence[admin_pb2.ChainToken]) -> Iterator[tuple[str, admin_pb2.ChainToken]]:
    """Each token once, with the tree glyphs that go before it, depth first, in the order given.

    A token whose parent is not listed (the parent expired first) starts a branch of its own, and so
    does anything left over (only malformed data could leave any): nothing the service returned is
    left out, and nothing is shown twice.
    """
    listed = {token.token_id for token in tokens}
    children: dict[str, list[admin_pb2.ChainToken]] = {}
    for token in tokens:
        if token.parent_token_id in listed:
            children.setdefault(token.parent_token_id, []).append(token)
    shown: set[str] = set()

    def walk(
        token: admin_pb2.ChainToken, lead: str, glyph: str
    ) -> Iterator[tuple[str, admin_pb2.ChainToken]]:
        shown.add(token.token_id)
        yield lead + glyph, token
        below = [child for child in children.get(token.token_id, []) if child.token_id not in shown]
        lead += "" if not glyph else ("   " if glyph == "└─ " else "│  ")
        for index, child in enumerate(below):
            yield from walk(child, lead, "└─ " if index == len(below) - 1 else "├─ ")

    tops = [token for token in tokens if token.parent_token_id not in listed]
    for token in [*tops, *tokens]:
        if token.token_id not in shown:
            yield from walk(token, "", "")


def summary(tokens: Sequence[admin_pb2.ChainToken]) -> Text:
    """``3 tokens: 2 active, 1 revoked; clients: billing, gateway``."""
    counts = Counter(_STATE_STYLES.get(t.state, ("unknown", ""))[0] for t in tokens)
    parts = [f"{counts[label]} {label}" for label, _ in _STATE_STYLES.values() if counts[label]]
    clients = sorted({t.client_id for t in tokens if t.client_id})
    noun = "token" if len(tokens) == 1 else "tokens"
    return Text(f"{len(tokens)} {noun}: {', '.join(parts) or 'none'}; clients: {', '.join(clients) or '-'}")


def relative(seconds: float) -> str:
    """``in 14m``, ``3h ago``: how far a moment is from now, in its largest whole unit."""
    span = abs(int(seconds))
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if span >= size:
            amount = f"{span // size}{unit}"
            break
    else:
        amount = f"{span}s"
    return f"in {amount}" if seconds >= 0 else f"{amount} ago"
