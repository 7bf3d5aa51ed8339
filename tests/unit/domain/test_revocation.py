"""The revocation model (SPEC §5): markers, horizons and chain listings, with no store involved."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import pytest

from delegation_service.domain.revocation import (
    ChainSnapshot,
    HorizonKey,
    HorizonKind,
    StateSnapshot,
    TokenRecord,
    TokenState,
    evaluate,
    state_of,
)
from delegation_service.domain.tokens import TokenKind

ROOT_ISSUED = 1_700_000_000
CHILD_ISSUED = ROOT_ISSUED + 100
EXPIRES = ROOT_ISSUED + 3600
NOW = ROOT_ISSUED + 200

ROOT = TokenRecord(
    token_id="root-jti",
    chain_id="chain-1",
    kind=TokenKind.UPSTREAM,
    parent_token_id=None,
    subject="user-1",
    client_id="gateway",
    root_client_id="gateway",
    scopes="directory.delegations.rw directory.person.rw",
    bearer="Per",
    issued_at=ROOT_ISSUED,
    root_issued_at=ROOT_ISSUED,
    expires_at=EXPIRES,
)
CHILD = TokenRecord(
    token_id="child-jti",
    chain_id="chain-1",
    kind=TokenKind.DELEGATED,
    parent_token_id="root-jti",
    subject="user-1",
    client_id="billing",
    root_client_id="gateway",
    scopes="directory.person.r",
    bearer="Per",
    issued_at=CHILD_ISSUED,
    root_issued_at=ROOT_ISSUED,
    expires_at=CHILD_ISSUED + 300,
)

SUBJECT = HorizonKey(HorizonKind.SUBJECT, "user-1")
CHILD_CLIENT = HorizonKey(HorizonKind.CLIENT, "billing")
ROOT_CLIENT = HorizonKey(HorizonKind.CLIENT, "gateway")


def snapshot(
    record: TokenRecord | None,
    *,
    token_revoked: bool = False,
    chain_revoked: bool = False,
    horizons: Mapping[HorizonKey, int] | None = None,
) -> StateSnapshot:
    return StateSnapshot(record, token_revoked, chain_revoked, horizons or {})


# --- evaluate: what the claims say against what the store holds ---


def test_recorded_delegated_token_with_nothing_against_it_is_active() -> None:
    assert evaluate(CHILD, snapshot(CHILD), NOW) is TokenState.ACTIVE


@pytest.mark.parametrize(
    "stored",
    [
        None,
        dataclasses.replace(CHILD, kind=TokenKind.UPSTREAM),
        dataclasses.replace(CHILD, chain_id="chain-2"),
        dataclasses.replace(CHILD, token_id="other-jti"),
    ],
    ids=["no-record", "recorded-as-upstream", "other-chain", "other-token"],
)
def test_delegated_token_without_its_own_record_is_unknown(stored: TokenRecord | None) -> None:
    # A valid signature alone never makes a delegated token active.
    assert evaluate(CHILD, snapshot(stored), NOW) is TokenState.UNKNOWN


@pytest.mark.parametrize(
    ("claimed", "stored"),
    [
        (CHILD, dataclasses.replace(CHILD, subject="someone-else")),
        (CHILD, dataclasses.replace(CHILD, client_id="search")),
        (CHILD, dataclasses.replace(CHILD, root_client_id="other-gateway")),
        (ROOT, dataclasses.replace(ROOT, subject="someone-else")),
        (ROOT, dataclasses.replace(ROOT, client_id="search", root_client_id="search")),
    ],
    ids=["child-subject", "child-client", "child-root-client", "root-subject", "root-client"],
)
def test_record_about_another_subject_or_client_is_no_record_of_this_token(
    claimed: TokenRecord, stored: TokenRecord
) -> None:
    # The horizons were read for the claimed subject and clients; a record naming others would make
    # the check consult the wrong horizons and call a revoked token active.
    assert evaluate(claimed, snapshot(stored), NOW) is TokenState.UNKNOWN


def test_unknown_wins_over_every_other_state_for_a_delegated_token() -> None:
    state = evaluate(CHILD, snapshot(None, token_revoked=True, chain_revoked=True), CHILD.expires_at + 1)

    assert state is TokenState.UNKNOWN


def test_unrecorded_upstream_root_is_judged_on_its_own_claims() -> None:
    assert evaluate(ROOT, snapshot(None), NOW) is TokenState.ACTIVE
    assert evaluate(ROOT, snapshot(None, chain_revoked=True), NOW) is TokenState.REVOKED
    assert evaluate(ROOT, snapshot(None, horizons={SUBJECT: ROOT_ISSUED}), NOW) is TokenState.REVOKED
    assert evaluate(ROOT, snapshot(None), EXPIRES) is TokenState.EXPIRED


def test_stored_record_is_authoritative_for_the_root_issue_time() -> None:
    # The verifier only knows the child's own iat; the subject horizon must still reach back to the root.
    expected = dataclasses.replace(CHILD, root_issued_at=CHILD.issued_at)
    horizon_between_root_and_child = {SUBJECT: ROOT_ISSUED + 50}

    state = evaluate(expected, snapshot(CHILD, horizons=horizon_between_root_and_child), NOW)

    assert state is TokenState.REVOKED


# --- state_of: expiry and markers ---


@pytest.mark.parametrize(
    ("now", "state"),
    [
        (CHILD.expires_at - 1, TokenState.ACTIVE),
        (CHILD.expires_at, TokenState.EXPIRED),  # exp is the first instant the token is no longer valid
        (CHILD.expires_at + 1, TokenState.EXPIRED),
    ],
)
def test_token_expires_at_its_exp(now: int, state: TokenState) -> None:
    assert state_of(CHILD, snapshot(CHILD), now) is state


def test_expired_wins_over_revoked() -> None:
    state = state_of(CHILD, snapshot(CHILD, token_revoked=True, chain_revoked=True), CHILD.expires_at)

    assert state is TokenState.EXPIRED


@pytest.mark.parametrize(
    ("token_revoked", "chain_revoked", "state"),
    [
        (False, False, TokenState.ACTIVE),
        (True, False, TokenState.REVOKED),
        (False, True, TokenState.REVOKED),
        (True, True, TokenState.REVOKED),
    ],
)
@pytest.mark.parametrize("record", [ROOT, CHILD], ids=["root", "child"])
def test_token_or_chain_marker_revokes(
    record: TokenRecord, token_revoked: bool, chain_revoked: bool, state: TokenState
) -> None:
    observed = state_of(
        record, snapshot(record, token_revoked=token_revoked, chain_revoked=chain_revoked), NOW
    )

    assert observed is state


# --- Horizons ---

HORIZON_CASES = [
    # The subject's horizon is compared with the chain root's issue time.
    (CHILD, SUBJECT, ROOT_ISSUED - 1, TokenState.ACTIVE),
    (CHILD, SUBJECT, ROOT_ISSUED, TokenState.REVOKED),  # at the horizon counts as revoked
    (CHILD, SUBJECT, ROOT_ISSUED + 50, TokenState.REVOKED),  # before the child's own issue time
    (CHILD, SUBJECT, CHILD_ISSUED + 1, TokenState.REVOKED),
    (ROOT, SUBJECT, ROOT_ISSUED - 1, TokenState.ACTIVE),
    (ROOT, SUBJECT, ROOT_ISSUED, TokenState.REVOKED),
    # The holder client's horizon is compared with the token's own issue time.
    (CHILD, CHILD_CLIENT, ROOT_ISSUED + 50, TokenState.ACTIVE),
    (CHILD, CHILD_CLIENT, CHILD_ISSUED - 1, TokenState.ACTIVE),
    (CHILD, CHILD_CLIENT, CHILD_ISSUED, TokenState.REVOKED),
    (CHILD, CHILD_CLIENT, CHILD_ISSUED + 1, TokenState.REVOKED),
    (ROOT, CHILD_CLIENT, NOW, TokenState.ACTIVE),  # another client's horizon does not touch the root
    # The root client's horizon is compared with the root's issue time, for the root and its children.
    (CHILD, ROOT_CLIENT, ROOT_ISSUED - 1, TokenState.ACTIVE),
    (CHILD, ROOT_CLIENT, ROOT_ISSUED, TokenState.REVOKED),
    (CHILD, ROOT_CLIENT, ROOT_ISSUED + 50, TokenState.REVOKED),
    (ROOT, ROOT_CLIENT, ROOT_ISSUED - 1, TokenState.ACTIVE),
    (ROOT, ROOT_CLIENT, ROOT_ISSUED, TokenState.REVOKED),
    # Horizons of unrelated subjects and clients change nothing.
    (CHILD, HorizonKey(HorizonKind.SUBJECT, "user-2"), NOW, TokenState.ACTIVE),
    (CHILD, HorizonKey(HorizonKind.CLIENT, "inventory"), NOW, TokenState.ACTIVE),
    # A subject horizon is not a client horizon of the same name.
    (CHILD, HorizonKey(HorizonKind.CLIENT, "user-1"), NOW, TokenState.ACTIVE),
    (CHILD, HorizonKey(HorizonKind.SUBJECT, "billing"), NOW, TokenState.ACTIVE),
]


@pytest.mark.parametrize(("record", "key", "horizon", "state"), HORIZON_CASES)
def test_horizon_revokes_tokens_issued_at_or_before_it(
    record: TokenRecord, key: HorizonKey, horizon: int, state: TokenState
) -> None:
    assert state_of(record, snapshot(record, horizons={key: horizon}), NOW) is state
    assert evaluate(record, snapshot(record, horizons={key: horizon}), NOW) is state


def test_horizon_checks_of_a_child_compare_each_key_with_the_right_issue_time() -> None:
    assert CHILD.horizon_checks() == (
        (SUBJECT, ROOT_ISSUED),
        (CHILD_CLIENT, CHILD_ISSUED),
        (ROOT_CLIENT, ROOT_ISSUED),
    )
    assert CHILD.horizon_keys() == (SUBJECT, CHILD_CLIENT, ROOT_CLIENT)


def test_horizon_checks_of_a_root_read_its_client_once() -> None:
    assert ROOT.horizon_checks() == ((SUBJECT, ROOT_ISSUED), (ROOT_CLIENT, ROOT_ISSUED))


def test_horizon_checks_skip_empty_client_ids() -> None:
    clientless = dataclasses.replace(ROOT, client_id="", root_client_id="")

    assert clientless.horizon_keys() == (SUBJECT,)


# --- ChainSnapshot ---

LATER = dataclasses.replace(CHILD, token_id="child-later", client_id="inventory", issued_at=CHILD_ISSUED + 20)
SAME_TIME = dataclasses.replace(CHILD, token_id="child-aaa", client_id="reader")
EXPIRED = dataclasses.replace(CHILD, token_id="child-expired", issued_at=ROOT_ISSUED + 1, expires_at=NOW)


def chain(*, chain_revoked: bool = False) -> ChainSnapshot:
    return ChainSnapshot(
        chain_id="chain-1",
        records=(LATER, CHILD, EXPIRED, SAME_TIME, ROOT),
        chain_revoked=chain_revoked,
        revoked_token_ids=frozenset({"child-jti"}),
        horizons={HorizonKey(HorizonKind.CLIENT, "reader"): CHILD_ISSUED},
    )


def test_chain_states_list_the_root_first_then_by_issue_time_then_by_id() -> None:
    ordered = [record.token_id for record, _ in chain().states(NOW)]

    assert ordered == ["root-jti", "child-expired", "child-aaa", "child-jti", "child-later"]


def test_chain_states_apply_each_records_own_marker_and_horizons() -> None:
    states = {record.token_id: state for record, state in chain().states(NOW)}

    assert states == {
        "root-jti": TokenState.ACTIVE,
        "child-expired": TokenState.EXPIRED,
        "child-aaa": TokenState.REVOKED,  # the reader client's horizon
        "child-jti": TokenState.REVOKED,  # its own marker
        "child-later": TokenState.ACTIVE,
    }


def test_revoked_chain_revokes_every_live_record() -> None:
    states = {record.token_id: state for record, state in chain(chain_revoked=True).states(NOW)}

    assert states == {
        "root-jti": TokenState.REVOKED,
        "child-expired": TokenState.EXPIRED,
        "child-aaa": TokenState.REVOKED,
        "child-jti": TokenState.REVOKED,
        "child-later": TokenState.REVOKED,
    }


def test_empty_chain_has_no_states() -> None:
    empty = ChainSnapshot("chain-1", (), chain_revoked=False, revoked_token_ids=frozenset(), horizons={})

    assert empty.states(NOW) == []
