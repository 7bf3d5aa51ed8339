"""CLI habits (issue 14.6): no abbreviated options, no silent broadest child, --version, plain pipes."""

from __future__ import annotations

import argparse
import io

import pytest

from delegation.v1 import admin_pb2, delegation_pb2
from delegation_service import cli, operator_view, version


def parse_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == cli.EXIT_USAGE
    return capsys.readouterr().err


def all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found.extend(all_parsers(child))
    return found


def test_every_parser_refuses_abbreviations() -> None:
    parsers = all_parsers(cli._parser())
    assert len(parsers) > 15  # every command and sub-command, the edge's included
    assert [p.prog for p in parsers if p.allow_abbrev] == []


def test_client_is_not_taken_for_client_id(capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: argparse expanded ``--client`` to ``--client-id`` and minted for that client."""
    error = parse_error(["delegate", "--client", "billing", "--scope", "warehouse.items.r"], capsys)
    assert "--client-id" in error  # still required: --client was not read as it


def test_delegate_without_scopes_needs_all_scopes(capsys: pytest.CaptureFixture[str]) -> None:
    error = parse_error(["delegate", "--client-id", "billing", "--parent-token", "x"], capsys)
    assert "one of the arguments --scope --all-scopes is required" in error


def test_scope_and_all_scopes_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    error = parse_error(
        ["delegate", "--client-id", "billing", "--scope", "warehouse.items.r", "--all-scopes"], capsys
    )
    assert "not allowed with argument" in error


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"delegation-service {version()}\n"
    assert version() != "unknown"


def a_chain() -> admin_pb2.GetChainResponse:
    def token(token_id: str, parent: str = "") -> admin_pb2.ChainToken:
        return admin_pb2.ChainToken(
            token_id=token_id,
            parent_token_id=parent,
            kind=delegation_pb2.TOKEN_KIND_DELEGATED if parent else delegation_pb2.TOKEN_KIND_UPSTREAM,
            state=admin_pb2.TOKEN_STATE_ACTIVE,
            client_id=f"c-{token_id}",
            scopes=["a.b.r", "a.c.r"],
        )

    return admin_pb2.GetChainResponse(chain_id="c1", tokens=[token("r"), token("a", "r")])


def test_a_pipe_gets_tab_separated_lines_not_a_table() -> None:
    out = io.StringIO()

    operator_view.render_chain_plain(a_chain(), out, now=0)

    lines = out.getvalue().splitlines()
    assert lines[0] == "Chain c1  not revoked"
    assert lines[1] == "Token\tKind\tState\tClient\tScopes\tExpires"
    assert lines[2].split("\t")[:5] == ["r", "upstream", "active", "c-r", "a.b.r a.c.r"]
    assert lines[3].split("\t")[:4] == ["└─ a", "delegated", "active", "c-a"]
    assert lines[-1] == "2 tokens: 2 active; clients: c-a, c-r"
    assert "\x1b[" not in out.getvalue() and "─" not in "".join(lines[:2])


def test_only_a_terminal_gets_the_table() -> None:
    assert not operator_view.is_terminal(io.StringIO())
