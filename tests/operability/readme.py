"""The README's tested blocks: a fenced block right after ``<!-- readme-test: NAME -->``."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def block(name: str) -> str:
    """The text of the README block marked ``name`` (exactly as a reader copies it)."""
    text = README.read_text(encoding="utf-8")
    match = re.search(
        rf"^<!-- readme-test: {re.escape(name)} -->\n```[a-z]*\n(.*?)^```$", text, re.MULTILINE | re.DOTALL
    )
    assert match, f"README.md has no block marked readme-test: {name}"
    return match.group(1)


def commands(shell_block: str) -> list[str]:
    """The commands of a shell block: comment lines dropped, backslash continuations joined."""
    joined = shell_block.replace("\\\n", "")
    return [
        line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
