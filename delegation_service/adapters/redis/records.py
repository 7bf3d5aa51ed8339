"""How the registry's records and events are written in Redis, and read back.

A chain is one hash (see :mod:`.registry` for the key layout). The fields of a chain's hash that are not
children (a child's field is its token id, which never starts with ":"): the root's token id, subject,
facts and scopes, and (indexed chains) the clients. The root is spread over four fields, each short
(Redis keeps a hash compact only while every value is at most ``hash-max-listpack-value``, 64 bytes by
default). ``revoke_known_chain.lua`` and ``mint.lua`` read the root's facts and a child's record too: a
change of encoding here is a change there.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from delegation_service.adapters.redis.calls import text
from delegation_service.domain.ports import RevocationEvent
from delegation_service.domain.revocation import HorizonKey, RevocationKind, TokenRecord
from delegation_service.domain.tokens import TokenKind

ROOT_ID, ROOT_SUBJECT, ROOT_FACTS, ROOT_SCOPES = ":i", ":u", ":r", ":s"
ROOT_FIELDS = (ROOT_ID, ROOT_SUBJECT, ROOT_FACTS, ROOT_SCOPES)
"""The root's fields in its chain's hash, in the order the scripts return them."""
# First element of the root's facts and of every child's record: what it is and in which encoding, so a
# later release can still read the records of this one. The root's facts: [3, client id, issue time,
# lifetime, bearer ("" when it is "Per/<subject>")]. A child keeps only what differs from its root:
# [4, client id, scopes, issue time as an offset from the root's, lifetime].
ROOT_V3 = 3
CHILD_V3 = 4


def is_child_field(token_id: str) -> bool:
    """Whether ``token_id`` can be a child's field: a child's field in the chain's hash is its token id,
    and the hash's own fields start with ":"."""
    return bool(token_id) and not token_id.startswith(":")


def event_fields(event: RevocationEvent, without: Sequence[str] = ()) -> list[str | int]:
    """The event's stream entry as field/value pairs (the script adds those in ``without``)."""
    fields: dict[str, str | int] = {
        "kind": event.kind,
        "chain_id": event.chain_id,
        "token_id": event.token_id,
        "subject": event.subject,
        "client_id": event.client_id,
        "revoked_at": event.revoked_at,
        "expires_at": event.expires_at,
    }
    pairs: list[str | int] = []
    for name, value in fields.items():
        if name not in without:
            pairs += [name, value]
    return pairs


def with_cursor(event: RevocationEvent, cursor: str) -> RevocationEvent:
    """``event`` as published, under the stream entry id ``cursor``."""
    return dataclasses.replace(event, cursor=cursor)


def _unencodable(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _compact_encoder() -> Callable[[list[object]], str]:
    """``json.dumps(fields, separators=(",", ":"), ensure_ascii=False)``, its encoder built once.

    ``json.dumps`` with options builds a ``JSONEncoder``, and that a C encoder, on every call (two per
    mint). Without the circular-reference check, whose state would be per call: records are flat lists.
    """
    make: Any = getattr(json.encoder, "c_make_encoder", None)  # the type stubs leave it out
    if make is None:  # an interpreter without the C accelerator
        return json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    chunks = make(None, _unencodable, json.encoder.encode_basestring, None, ":", ",", False, False, True)
    return lambda fields: "".join(chunks(fields, 0))


_dumps = _compact_encoder()


def encode_root(root: TokenRecord) -> tuple[str, str, str, str]:
    """The root's fields: token id, subject, facts and scopes (the chain id is in the key)."""
    bearer = "" if root.bearer == f"Per/{root.subject}" else root.bearer
    facts = _dumps([ROOT_V3, root.client_id, root.issued_at, root.expires_at - root.issued_at, bearer])
    return root.token_id, root.subject, facts, root.scopes


def encode_child(child: TokenRecord) -> str:
    """A child's record: only what differs from its root."""
    return _dumps(
        [
            CHILD_V3,
            child.client_id,
            child.scopes,
            child.issued_at - child.root_issued_at,
            child.expires_at - child.issued_at,
        ]
    )


def decode_root(chain_id: str, fields: Sequence[bytes | str | None]) -> TokenRecord | None:
    """The root kept in a chain's hash (its id, subject, facts and scopes), or ``None`` if there is none."""
    raw_id, raw_subject, raw_facts, raw_scopes = fields
    if raw_facts is None:
        return None
    if raw_id is None or raw_subject is None or raw_scopes is None:
        raise ValueError("incomplete root record")
    version, client_id, issued_at, lifetime, bearer = json.loads(raw_facts)
    if version != ROOT_V3:
        raise ValueError("unknown root record format")
    subject = text(raw_subject)
    return TokenRecord(
        token_id=text(raw_id),
        chain_id=chain_id,
        kind=TokenKind.UPSTREAM,
        parent_token_id=None,
        subject=subject,
        client_id=str(client_id),
        root_client_id=str(client_id),
        scopes=text(raw_scopes),
        bearer=str(bearer) or f"Per/{subject}",
        issued_at=int(issued_at),
        root_issued_at=int(issued_at),
        expires_at=int(issued_at) + int(lifetime),
    )


def decode_known_root(
    chain_id: str, fields: Sequence[bytes | str | None], root: TokenRecord, encoded: Sequence[str]
) -> TokenRecord | None:
    """:func:`decode_root` of ``fields`` (a reply), without decoding when they are ``encoded``, the
    fields :func:`encode_root` gave for ``root``, and decoding them gives ``root`` back (an upstream root
    whose record is its own root's): then the stored root is the one presented, as on nearly every mint.
    (A check has not encoded its root: encoding it there costs what decoding does.)"""
    if (
        fields[2] is not None
        and root.chain_id == chain_id
        and root.kind is TokenKind.UPSTREAM
        and root.parent_token_id is None
        and root.root_client_id == root.client_id
        and root.root_issued_at == root.issued_at
        and root.bearer
        and all(
            (field.decode() if isinstance(field, bytes) else field) == sent
            for field, sent in zip(fields, encoded, strict=True)
        )
    ):
        return root
    return decode_root(chain_id, fields)


def decode_child(
    chain_id: str, token_id: str, raw: bytes | str, root: TokenRecord | None
) -> TokenRecord | None:
    """A child completed from its ``root``; ``None`` when the root is gone.

    A child never outlives its root, so a missing root means the child has expired too: it decodes to
    nothing (and a check fails closed) rather than to half a record.
    """
    version, client_id, scopes, issued_offset, lifetime = json.loads(raw)
    if version != CHILD_V3:
        raise ValueError("unknown child record format")
    if root is None:
        return None
    issued_at = root.issued_at + int(issued_offset)
    return TokenRecord(
        token_id=token_id,
        chain_id=chain_id,
        kind=TokenKind.DELEGATED,
        parent_token_id=root.token_id,
        subject=root.subject,
        client_id=str(client_id),
        root_client_id=root.client_id,
        scopes=str(scopes),
        bearer=root.bearer,
        issued_at=issued_at,
        root_issued_at=root.issued_at,
        expires_at=issued_at + int(lifetime),
    )


def decode_children(
    chain_id: str, ids: Sequence[bytes | str], raws: Sequence[bytes | str | None], root: TokenRecord | None
) -> list[TokenRecord]:
    """The children among ``ids`` whose records are there, completed from ``root``."""
    children = []
    for token_id, raw in zip(ids, raws, strict=True):
        child = None if raw is None else decode_child(chain_id, text(token_id), raw, root)
        if child is not None:
            children.append(child)
    return children


def decode_horizons(keys: Sequence[HorizonKey], values: Sequence[Any]) -> dict[HorizonKey, int]:
    """The horizons that are set among ``keys``, from the values read for them (``None``: not set)."""
    return {key: int(value) for key, value in zip(keys, values, strict=True) if value is not None}


def decode_event(entry_id: bytes | str, raw_fields: Mapping[Any, Any]) -> RevocationEvent:
    """A revocation event read back from its stream entry."""
    fields = {text(name): text(value) for name, value in raw_fields.items()}
    return RevocationEvent(
        cursor=text(entry_id),
        kind=RevocationKind(fields["kind"]),
        chain_id=fields["chain_id"],
        token_id=fields["token_id"],
        subject=fields["subject"],
        client_id=fields["client_id"],
        revoked_at=int(fields["revoked_at"]),
        expires_at=int(fields["expires_at"]),
    )
