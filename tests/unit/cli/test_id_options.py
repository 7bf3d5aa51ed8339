"""Ids are base64url and may begin with "-": the id options still take them as their value."""

from __future__ import annotations

import pytest

from delegation_service import cli


@pytest.mark.parametrize("option", sorted(cli.ID_OPTIONS))
def test_an_id_beginning_with_a_dash_is_the_options_value(option: str) -> None:
    assert cli._attach_id_values(["revoke", "chain", option, "-zt4Qx", "--yes"]) == [
        "revoke",
        "chain",
        f"{option}=-zt4Qx",
        "--yes",
    ]


def test_chain_show_parses_a_dash_led_chain_id() -> None:
    args = cli._parser().parse_args(cli._attach_id_values(["chain", "show", "--chain-id", "-zt4Qx"]))
    assert args.chain_id == "-zt4Qx"


def test_other_words_are_left_alone() -> None:
    words = ["chain", "show", "--chain-id=-a", "--token", "eyJ.x.y", "--chain-id"]
    assert cli._attach_id_values(words) == words
