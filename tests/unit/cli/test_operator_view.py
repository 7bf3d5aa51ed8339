"""The chain view of the operator CLI: tree glyphs, summary and relative times (no server needed)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from delegation.v1 import admin_pb2
from delegation_service import operator_view


def token(
    token_id: str, parent: str = "", state: admin_pb2.TokenState = admin_pb2.TOKEN_STATE_ACTIVE
) -> admin_pb2.ChainToken:
    return admin_pb2.ChainToken(
        token_id=token_id, parent_token_id=parent, client_id=f"c-{token_id}", state=state
    )


def glyphs(tokens: list[admin_pb2.ChainToken]) -> list[str]:
    return [prefix + t.token_id for prefix, t in operator_view.tree_order(tokens)]


def test_children_hang_under_their_root_in_the_order_given() -> None:
    assert glyphs([token("root"), token("a", "root"), token("b", "root")]) == [
        "root",
        "├─ a",
        "└─ b",
    ]


def test_children_whose_root_is_gone_are_still_listed() -> None:
    # The root expired first (an upstream token may be shorter-lived than the listing's children).
    assert glyphs([token("a", "gone"), token("b", "gone")]) == ["a", "b"]


def test_deeper_chains_draw_their_branches() -> None:
    tokens = [token("r"), token("a", "r"), token("a1", "a"), token("b", "r"), token("b1", "b")]
    assert glyphs(tokens) == ["r", "├─ a", "│  └─ a1", "└─ b", "   └─ b1"]


def test_a_cycle_in_the_data_never_loops() -> None:
    assert glyphs([token("r"), token("a", "b"), token("b", "a")]) == ["r", "a", "└─ b"]


def test_summary_counts_states_and_clients() -> None:
    tokens = [token("r"), token("a", "r", admin_pb2.TOKEN_STATE_REVOKED), token("b", "r")]
    assert str(operator_view.summary(tokens)) == "3 tokens: 2 active, 1 revoked; clients: c-a, c-b, c-r"
    assert str(operator_view.summary([])) == "0 tokens: none; clients: -"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "in 0s"),
        (59, "in 59s"),
        (61, "in 1m"),
        (3 * 3600 + 5, "in 3h"),
        (-90, "1m ago"),
        (2 * 86_400, "in 2d"),
    ],
)
def test_relative_times(seconds: float, text: str) -> None:
    assert operator_view.relative(seconds) == text


def test_a_pipe_gets_plain_wide_lines() -> None:
    out = io.StringIO()
    chain = admin_pb2.GetChainResponse(chain_id="c1", revoked=True, tokens=[token("r"), token("a", "r")])
    operator_view.render_chain(chain, operator_view.console(out), now=0)
    lines = out.getvalue().splitlines()
    assert lines[0] == "Chain c1  REVOKED"
    assert "\x1b[" not in out.getvalue()
    assert any(line.startswith("├─ a") or line.startswith("└─ a") for line in lines)
    assert lines[-1] == "2 tokens: 2 active; clients: c-a, c-r"


def test_short_ids_are_eight_characters_unless_two_would_clash() -> None:
    ids = ["6iFyS3rMbzQrTQ-2bOb3HQ", "2NMQpJVCFDuGhSixUTUPYw", "2NMQpJVCxxxxxxxxxxxxxx", "short"]
    assert operator_view.short_ids(ids) == {
        "6iFyS3rMbzQrTQ-2bOb3HQ": "6iFyS3rMb…",  # one length for all, so the column stays aligned
        "2NMQpJVCFDuGhSixUTUPYw": "2NMQpJVCF…",
        "2NMQpJVCxxxxxxxxxxxxxx": "2NMQpJVCx…",
        "short": "short",
    }
    alone = operator_view.short_ids(["6iFyS3rMbzQrTQ-2bOb3HQ"])
    assert alone == {"6iFyS3rMbzQrTQ-2bOb3HQ": "6iFyS3rM…"}
    # Nothing is cut to save a single character.
    assert operator_view.short_ids(["abcdefghi"]) == {"abcdefghi": "abcdefghi"}


def test_a_terminal_table_fits_80_columns_and_wide_keeps_whole_ids() -> None:
    tokens = [
        admin_pb2.ChainToken(
            token_id=f"{i}NMQpJVCFDuGhSixUTUPYw",
            parent_token_id="" if i == 0 else f"{i - 1}NMQpJVCFDuGhSixUTUPYw",
            client_id="billing-subsystem",
            scopes=["directory.delegations.rw", "https://api.publiq.be/auth/uitpas"],
            state=admin_pb2.TOKEN_STATE_ACTIVE,
        )
        for i in range(4)
    ]
    chain = admin_pb2.GetChainResponse(chain_id="PkjzjK23UFqpS3IyPj-TJg", tokens=tokens)
    narrow = io.StringIO()
    operator_view.render_chain(chain, Console(file=narrow, width=80, highlight=False), now=0)
    assert all(len(line) <= 80 for line in narrow.getvalue().splitlines())
    assert "0NMQpJVC…" in narrow.getvalue() and "0NMQpJVCFDuGhSixUTUPYw" not in narrow.getvalue()
    wide = io.StringIO()
    operator_view.render_chain(chain, Console(file=wide, width=160, highlight=False), now=0, wide=True)
    assert all(token.token_id in wide.getvalue() for token in tokens)
    assert "1970-01-01T00:00:00Z (in 0s)" in wide.getvalue()
