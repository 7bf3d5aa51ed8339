"""The Redis records' encoding: the shortcut that skips decoding a known root gives what decoding gives,
and the encoder built once writes what ``json.dumps`` writes."""

from __future__ import annotations

import dataclasses
import json

from hypothesis import given
from hypothesis import strategies as st

from delegation_service.adapters.redis.records import (
    _dumps,
    decode_known_root,
    decode_root,
    encode_child,
    encode_root,
)
from delegation_service.domain.revocation import TokenRecord
from delegation_service.domain.tokens import TokenKind

CHAIN = "PkjzjK23UFqpS3IyPj-TJg"
texts = st.text(min_size=1, max_size=12)


@st.composite
def roots(draw: st.DrawFn) -> TokenRecord:
    subject, client = draw(texts), draw(texts)
    issued = draw(st.integers(0, 2**40))
    return TokenRecord(
        token_id=draw(texts),
        chain_id=CHAIN,
        kind=TokenKind.UPSTREAM,
        parent_token_id=None,
        subject=subject,
        client_id=client,
        root_client_id=client,
        scopes=draw(st.text(max_size=30)),
        bearer=draw(st.sampled_from([f"Per/{subject}", "Org/acme", "Per/someone-else", ""])),
        issued_at=issued,
        root_issued_at=issued,
        expires_at=issued + draw(st.integers(1, 10**6)),
    )


def as_reply(fields: tuple[str, ...]) -> list[bytes | str | None]:
    return [field.encode() for field in fields]


@given(root=roots(), other=roots())
def test_a_known_root_decodes_to_what_decoding_gives(root: TokenRecord, other: TokenRecord) -> None:
    encoded = encode_root(root)
    reply = as_reply(encoded)
    assert decode_known_root(CHAIN, reply, root, encoded) == decode_root(CHAIN, reply)
    # Another stored root (or the same one with other scopes) is decoded from the reply.
    stored = as_reply(encode_root(other))
    assert decode_known_root(CHAIN, stored, root, encoded) == decode_root(CHAIN, stored)
    rescoped = as_reply(encode_root(dataclasses.replace(root, scopes=root.scopes + " x")))
    assert decode_known_root(CHAIN, rescoped, root, encoded) == decode_root(CHAIN, rescoped)
    assert decode_known_root(CHAIN, [None] * 4, root, encoded) is None


def test_the_compact_encoder_writes_what_json_dumps_writes() -> None:
    for fields in ([3, "gateway", 1, 2, ""], [4, 'bïlling\u2028"x"', "a b", 0, 900], []):
        assert _dumps(fields) == json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
    child = TokenRecord("c", CHAIN, TokenKind.DELEGATED, "r", "s", "billing", "g", "a b", "Per/s", 5, 1, 9)
    assert json.loads(encode_child(child)) == [4, "billing", "a b", 4, 4]
