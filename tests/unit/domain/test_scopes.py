"""Scope grammar, the permission lattice and request splitting (SPEC §2, seeds 000 and 002)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from delegation_service.domain.scopes import (
    MAX_SCOPE_LENGTH,
    Bearer,
    BearerType,
    Permission,
    ScopeSyntaxError,
    StructuredScope,
    UrlScope,
    format_scopes,
    parse_scope,
    split_scopes,
)

ORG_ID = "b1475f65-236c-58b8-96e1-e1778b43beb7"

# Seed 002's table of valid requested scopes, with what each one means.
SEED_002_VALID = [
    ("directory.person.r", None, "directory", "person", Permission.READ),
    ("Per.directory.person.r", Bearer(BearerType.PERSON), "directory", "person", Permission.READ),
    (
        "Org.directory.machines.rw",
        Bearer(BearerType.ORGANIZATION),
        "directory",
        "machines",
        Permission.READ_WRITE,
    ),
    ("Org.warehouse.items.r", Bearer(BearerType.ORGANIZATION), "warehouse", "items", Permission.READ),
    (
        f"Org/{ORG_ID}.warehouse.items.r",
        Bearer(BearerType.ORGANIZATION, ORG_ID),
        "warehouse",
        "items",
        Permission.READ,
    ),
    (
        "Org.directory.delegations.rw",
        Bearer(BearerType.ORGANIZATION),
        "directory",
        "delegations",
        Permission.READ_WRITE,
    ),
]


@pytest.mark.parametrize(("text", "bearer", "audience", "name", "permission"), SEED_002_VALID)
def test_seed_002_valid_examples_parse_as_described(
    text: str, bearer: Bearer | None, audience: str, name: str, permission: Permission
) -> None:
    scope = parse_scope(text)

    assert scope == StructuredScope(audience, name, permission, bearer)


@pytest.mark.parametrize(("text", "bearer", "audience", "name", "permission"), SEED_002_VALID)
def test_returned_form_never_carries_the_bearer_prefix(
    text: str, bearer: Bearer | None, audience: str, name: str, permission: Permission
) -> None:
    assert str(parse_scope(text)) == f"{audience}.{name}.{permission.value}"


def test_omitted_bearer_means_person() -> None:
    scope = parse_scope("directory.person.r")

    assert isinstance(scope, StructuredScope)
    assert scope.bearer is None
    assert scope.bearer_type is BearerType.PERSON


def test_bearer_id_is_kept_from_the_client_credentials_form() -> None:
    scope = parse_scope(f"Org/{ORG_ID}.warehouse.items.r")

    assert isinstance(scope, StructuredScope)
    assert scope.bearer == Bearer(BearerType.ORGANIZATION, ORG_ID)
    assert str(scope.bearer) == f"Org/{ORG_ID}"
    assert scope.bearer_type is BearerType.ORGANIZATION


@pytest.mark.parametrize(
    "text",
    [
        "Per/4d3c2b1a.directory.person.r",
        "abc.def.r",
        "abc.def.rw",
        "a12.def.r",  # digits and underscores are allowed in the audience after its first letter
        "a_b.def.r",
        "abc.d_f.r",
        "abc.d__.r",
        "directory.delegations.rw",
        "xxx." + "y" * (MAX_SCOPE_LENGTH - 6) + ".r",  # exactly the maximum length
    ],
)
def test_other_valid_structured_scopes_parse(text: str) -> None:
    assert isinstance(parse_scope(text), StructuredScope)


INVALID_SCOPES = [
    # Wrong case: scopes are case-sensitive.
    "Directory.person.r",
    "directory.Person.r",
    "directory.person.R",
    "directory.person.RW",
    "directory.person.Rw",
    "org.directory.person.r",
    "per.directory.person.r",
    "PER.directory.person.r",
    "ORG.directory.person.r",
    "oRG.directory.person.r",
    # Permissions other than r and rw, matched as a whole (no prefix match).
    "a.b.rwx",
    "abc.def.rwx",
    "abc.def.w",
    "abc.def.x",
    "abc.def.wr",
    "abc.def.",
    "abc.def.rr",
    # Parts too short.
    "ab.def.r",
    "abc.de.r",
    "a.b.r",
    # Digits where they are not allowed.
    "1bc.def.r",
    "abc.d3f.r",
    "abc.1ef.r",
    "_bc.def.r",
    "abc._ef.r",
    # Dashes and other punctuation.
    "ab-c.def.r",
    "abc.de-f.r",
    "abc.def.r!",
    # Empty parts, missing parts, extra parts.
    "",
    ".",
    "..",
    "abc..r",
    ".abc.def.r",
    "abc.def",
    "abc.def.ghi.r",
    "Per.abc.def",
    "Per..abc.def.r",
    "Per.Org.abc.def.r",
    # Whitespace anywhere (no trimming): full match, so a trailing newline fails too.
    " abc.def.r",
    "abc.def.r ",
    "abc. def.r",
    "abc.def .r",
    "\tabc.def.r",
    "abc.def.r\t",
    "abc.def.r\n",
    "\nabc.def.r",
    "abc.def.r\r\n",
    "abc.def.r\x00",
    "abc.def.r\u00a0",
    # Unicode look-alikes: no folding.
    "\u0430bc.def.r",  # Cyrillic a
    "abc.def.\u0433",  # Cyrillic ge, looks like r
    "\uff41\uff42\uff43.def.r",  # fullwidth abc
    "abc.def.\uff52",  # fullwidth r
    "d\u0131rectory.person.r",  # dotless i
    "directory.person.r\u200b",  # zero-width space
    "O\u0433g.abc.def.r",
    # Bearer part errors.
    "Org/ABC.abc.def.r",
    "Org/.abc.def.r",
    "Org/abc_def.abc.def.r",
    "Org/ab c.abc.def.r",
    "Org//abc.abc.def.r",
    "Org/abc/def.abc.def.r",
    "Usr.abc.def.r",
    "Org",
    "Org.",
    # Stray dots.
    "abc.def.r.",
    "abc.def..r",
    "abc..def.r",
    # Overlong, even when otherwise well-formed.
    "abc." + "d" * MAX_SCOPE_LENGTH + ".r",
    "xxx." + "y" * (MAX_SCOPE_LENGTH - 5) + ".r",  # one past the maximum
    "https://api.publiq.be/" + "a" * MAX_SCOPE_LENGTH,
    # URLs: only https, printable ASCII, nothing after the scheme is not a URL.
    "http://api.publiq.be/auth/uitpas",
    "https://",
    "https://api.publiq.be/auth/uit pas",
    "https://api.publiq.be/auth/uitpas\n",
    "https://api.publiq.be/auth/uitp\u0430s",
    "HTTPS://api.publiq.be/auth/uitpas",
    "ftp://api.publiq.be/auth/uitpas",
]


def test_invalid_scope_table_is_long() -> None:
    assert len(INVALID_SCOPES) >= 40
    assert len(set(INVALID_SCOPES)) == len(INVALID_SCOPES)


@pytest.mark.parametrize("text", INVALID_SCOPES, ids=ascii)
def test_invalid_scope_is_rejected(text: str) -> None:
    with pytest.raises(ScopeSyntaxError) as caught:
        parse_scope(text)

    assert caught.value.text == text


def test_syntax_error_message_does_not_echo_the_input() -> None:
    with pytest.raises(ScopeSyntaxError) as caught:
        parse_scope("secret-looking-value")

    assert "secret-looking-value" not in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        "https://api.publiq.be/auth/uitpas",
        "https://api.publiq.be/auth/entry",
        "https://example.org/scopes/a.b.rw?x=1#y",
    ],
)
def test_url_form_scope_is_opaque_and_returned_verbatim(text: str) -> None:
    scope = parse_scope(text)

    assert scope == UrlScope(text)
    assert str(scope) == text


def test_url_scope_covers_only_itself() -> None:
    uitpas = UrlScope("https://api.publiq.be/auth/uitpas")

    assert uitpas.covers(UrlScope("https://api.publiq.be/auth/uitpas"))
    assert not uitpas.covers(UrlScope("https://api.publiq.be/auth/uitpas/"))
    assert not uitpas.covers(StructuredScope("directory", "person", Permission.READ))


@pytest.mark.parametrize(
    ("held", "asked", "covered"),
    [
        (Permission.READ_WRITE, Permission.READ_WRITE, True),
        (Permission.READ_WRITE, Permission.READ, True),
        (Permission.READ, Permission.READ, True),
        (Permission.READ, Permission.READ_WRITE, False),
    ],
)
def test_permission_lattice_rw_covers_r_and_r_covers_only_r(
    held: Permission, asked: Permission, covered: bool
) -> None:
    assert held.covers(asked) is covered


@pytest.mark.parametrize(
    ("held", "asked", "covered"),
    [
        ("directory.person.rw", "directory.person.r", True),
        ("directory.person.rw", "directory.person.rw", True),
        ("directory.person.r", "directory.person.r", True),
        ("directory.person.r", "directory.person.rw", False),
        ("directory.person.rw", "directory.profile.r", False),
        ("directory.person.rw", "warehouse.person.r", False),
        ("directory.person.rw", "Org.directory.person.r", True),  # bearers are checked elsewhere
        ("Per.directory.person.r", "directory.person.r", True),
        ("directory.person.rw", "https://api.publiq.be/auth/uitpas", False),
    ],
)
def test_structured_scope_covers_same_key_under_the_lattice(held: str, asked: str, covered: bool) -> None:
    assert parse_scope(held).covers(parse_scope(asked)) is covered


def test_with_permission_and_without_bearer_keep_everything_else() -> None:
    scope = parse_scope(f"Org/{ORG_ID}.warehouse.items.rw")
    assert isinstance(scope, StructuredScope)

    assert scope.with_permission(Permission.READ) == StructuredScope(
        "warehouse", "items", Permission.READ, Bearer(BearerType.ORGANIZATION, ORG_ID)
    )
    assert scope.without_bearer() == StructuredScope("warehouse", "items", Permission.READ_WRITE)
    assert scope.key == ("warehouse", "items")


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ([], []),
        (["abc.def.r"], [(0, "abc.def.r")]),
        (["abc.def.r ghi.jkl.rw"], [(0, "abc.def.r"), (0, "ghi.jkl.rw")]),
        # RFC 6749 §3.3 spacing only: a doubled, leading or trailing space keeps the entry whole (and
        # invalid), and so does an empty or blank entry: never read as "no scopes" (SPEC §2).
        (["abc.def.r  ghi.jkl.rw"], [(0, "abc.def.r  ghi.jkl.rw")]),
        ([" abc.def.r"], [(0, " abc.def.r")]),
        (["abc.def.r "], [(0, "abc.def.r ")]),
        ([""], [(0, "")]),
        (["   "], [(0, "   ")]),
        (["abc.def.r", "", "\t"], [(0, "abc.def.r"), (1, ""), (2, "\t")]),
        (["abc.def.r", "ghi.jkl.rw"], [(0, "abc.def.r"), (1, "ghi.jkl.rw")]),
        # Duplicates collapse, keeping the first occurrence's position and index.
        (["abc.def.r", "abc.def.r"], [(0, "abc.def.r")]),
        (["b.x.r a.x.r", "a.x.r c.x.r"], [(0, "b.x.r"), (0, "a.x.r"), (1, "c.x.r")]),
        (["zzz.zzz.r", "aaa.aaa.r"], [(0, "zzz.zzz.r"), (1, "aaa.aaa.r")]),
        # Only the ASCII space separates: other whitespace stays inside (and makes the scope invalid).
        (["abc.def.r\tghi.jkl.rw"], [(0, "abc.def.r\tghi.jkl.rw")]),
        (["abc.def.r\nghi.jkl.rw"], [(0, "abc.def.r\nghi.jkl.rw")]),
        (["abc.def.r\u00a0ghi.jkl.rw"], [(0, "abc.def.r\u00a0ghi.jkl.rw")]),
        # Different spellings of one scope are different strings here; the policy collapses grants.
        (
            ["directory.person.r Per.directory.person.r"],
            [(0, "directory.person.r"), (0, "Per.directory.person.r")],
        ),
    ],
)
def test_split_scopes_flattens_space_separated_entries(
    entries: list[str], expected: list[tuple[int, str]]
) -> None:
    assert split_scopes(entries) == expected


def test_format_scopes_drops_bearers_and_duplicates() -> None:
    scopes = [
        parse_scope("Per.directory.person.r"),
        parse_scope("directory.person.r"),
        parse_scope("https://api.publiq.be/auth/uitpas"),
        parse_scope(f"Org/{ORG_ID}.warehouse.items.rw"),
    ]

    assert format_scopes(scopes) == "directory.person.r https://api.publiq.be/auth/uitpas warehouse.items.rw"


@given(st.text(max_size=300))
def test_parse_scope_on_arbitrary_text_raises_only_syntax_errors(text: str) -> None:
    try:
        scope = parse_scope(text)
    except ScopeSyntaxError:
        return
    assert isinstance(scope, StructuredScope | UrlScope)


_LOWER = "abcdefghijklmnopqrstuvwxyz"
_audiences = st.from_regex(r"[a-z][a-z0-9_]{2,10}", fullmatch=True)
_names = st.from_regex(r"[a-z][a-z_]{2,10}", fullmatch=True)
_bearers = st.sampled_from(["", "Per.", "Org.", f"Org/{ORG_ID}.", "Per/abc-123."])
_permissions = st.sampled_from(["r", "rw"])


@given(_bearers, _audiences, _names, _permissions)
def test_grammar_round_trips_without_the_bearer(
    bearer: str, audience: str, name: str, permission: str
) -> None:
    scope = parse_scope(f"{bearer}{audience}.{name}.{permission}")

    assert str(scope) == f"{audience}.{name}.{permission}"
    assert parse_scope(str(scope)) == StructuredScope(audience, name, Permission(permission))


@given(st.lists(st.text(alphabet=_LOWER + " .\t", max_size=20), max_size=6))
def test_split_scopes_keeps_every_entry_either_split_or_whole(entries: list[str]) -> None:
    pieces = split_scopes(entries)
    texts = [text for _, text in pieces]

    well_spaced = [entry for entry in entries if all(entry.split(" "))]
    malformed = {entry for entry in entries if not all(entry.split(" "))}

    assert len(texts) == len(set(texts))
    assert all(text == entries[index] or text in entries[index].split(" ") for index, text in pieces)
    assert set(texts) == {piece for entry in well_spaced for piece in entry.split(" ")} | malformed
    assert bool(pieces) == bool(entries)  # no entries is "no scopes"; a blank entry is not
