"""The key rotator over a real key directory, on a clock the test moves; the signer and verifier it feeds."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest

from delegation_service.adapters.jwt_codec import JwtVerifier
from delegation_service.adapters.key_directory import KeyDirectory, file_name
from delegation_service.adapters.key_rotation import KeyRotator, KeySnapshot, RotatingSigner, RotatingVerifier
from delegation_service.adapters.keys import KeySet
from delegation_service.domain.errors import ParentRejected
from delegation_service.domain.rotation import KeyState, RotationPolicy
from delegation_service.domain.scopes import Bearer, BearerType, parse_scope
from delegation_service.domain.tokens import ChildToken

OWN = "https://delegation.rotation.invalid"
START = 1_800_000_000.0
POLICY = RotationPolicy(interval=100.0, publish_ahead=20.0, longest_lifetime=30.0)


class Clock:
    """Wall time the test sets: float seconds for the rotator, whole seconds for the verifier."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def now(self) -> int:
        return int(self.t)


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


def rotator(path: Path, clock: Clock) -> KeyRotator:
    return KeyRotator(KeyDirectory(path, clock=clock), POLICY, "ES256", clock=clock)


def states(snapshot: KeySnapshot) -> list[tuple[int, KeyState]]:
    return [(t.key.generation, t.state) for t in snapshot.schedule.keys]


def child(clock: Clock, lifetime: int = 25) -> ChildToken:
    return ChildToken(
        token_id="child-1",
        chain_id="chain-1",
        parent_token_id="up-1",
        issuer=OWN,
        subject="user-1",
        audiences=("search-api",),
        client_id="search-api",
        actor_client_id="gateway",
        scopes=(parse_scope("search.index.r"),),
        bearer=Bearer(BearerType.PERSON, "user-1"),
        issued_at=clock.now(),
        expires_at=clock.now() + lifetime,
    )


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def test_the_first_run_creates_a_key_that_signs_at_once(tmp_path: Path, clock: Clock) -> None:
    snapshot = rotator(tmp_path / "keys", clock).step()
    assert states(snapshot) == [(0, KeyState.ACTIVE)]
    assert [k["kid"] for k in snapshot.key_set.jwks()["keys"]] == [snapshot.key_set.active.kid]


def test_keys_go_through_pending_active_retiring_and_their_file_is_removed(
    tmp_path: Path, clock: Clock
) -> None:
    keys = rotator(tmp_path, clock)
    first = keys.step().key_set.active.kid
    clock.t = START + 79
    assert states(keys.step()) == [(0, KeyState.ACTIVE)]
    clock.t = START + 80  # due: interval - publish_ahead after the first key's activation
    snapshot = keys.step()
    assert states(snapshot) == [(0, KeyState.ACTIVE), (1, KeyState.PENDING)]
    assert len(snapshot.key_set.jwks()["keys"]) == 2  # the next key is published before it signs
    clock.t = START + 100
    assert states(keys.step()) == [(0, KeyState.RETIRING), (1, KeyState.ACTIVE)]
    clock.t = START + 130
    snapshot = keys.step()
    assert states(snapshot) == [(0, KeyState.RETIRED), (1, KeyState.ACTIVE)]
    assert first not in [k["kid"] for k in snapshot.key_set.jwks()["keys"]]
    assert (tmp_path / file_name(0)).exists()  # kept a publish-ahead longer for clocks behind ours
    clock.t = START + 150
    keys.step()
    assert not (tmp_path / file_name(0)).exists()


def test_the_signer_switches_at_the_activation_time_without_waiting_for_the_rotator(
    tmp_path: Path, clock: Clock
) -> None:
    keys = rotator(tmp_path, clock)
    keys.step()
    clock.t = START + 80
    snapshot = keys.step()
    signer = RotatingSigner(snapshot, clock=clock)
    old, new = snapshot.key_set.active.kid, snapshot.key_set.next_keys[0].kid
    clock.t = START + 99.999
    assert kid_of(signer.sign(child(clock))) == old
    clock.t = START + 100
    assert kid_of(signer.sign(child(clock))) == new
    assert signer.jwks() == snapshot.key_set.jwks()
    assert {k["kid"] for k in snapshot.key_set.jwks()["keys"]} == {old, new}


def test_two_rotators_on_one_directory_create_each_key_once_and_agree(tmp_path: Path, clock: Clock) -> None:
    one, other = rotator(tmp_path, clock), rotator(tmp_path, clock)
    for step in range(0, 400, 5):
        clock.t = START + step
        ours, theirs = one.step(), other.step()
        assert states(ours) == states(theirs)
        assert ours.key_set.active.kid == theirs.key_set.active.kid
    generations = sorted(p.name for p in tmp_path.iterdir())
    assert generations[-1] == file_name(4)  # keys at 0, 80, 180, 280, 380: one file per generation


def test_a_rotator_that_was_down_keeps_the_current_key_until_the_late_one_was_published(
    tmp_path: Path, clock: Clock
) -> None:
    keys = rotator(tmp_path, clock)
    first = keys.step().key_set.active.kid
    clock.t = START + 500  # the next key was due at +80
    snapshot = keys.step()
    assert snapshot.key_set.active.kid == first
    assert states(snapshot) == [(0, KeyState.ACTIVE), (1, KeyState.PENDING)]
    clock.t = START + 520
    assert states(keys.step()) == [(0, KeyState.RETIRING), (1, KeyState.ACTIVE)]


def test_the_rotating_verifier_accepts_published_keys_and_refuses_a_retired_one(
    tmp_path: Path, clock: Clock
) -> None:
    keys = rotator(tmp_path, clock)
    snapshot = keys.step()
    signer = RotatingSigner(snapshot, clock=clock)

    def build(own: KeySet) -> JwtVerifier:
        return JwtVerifier(own_issuer=OWN, own_keys=own, trusted=[], leeway_seconds=0, clock=clock)

    verifier = RotatingVerifier(build, snapshot.key_set)

    def install(new: KeySnapshot) -> None:
        signer.install(new)
        verifier.install(new.key_set)

    keys.install = install
    # Longer than the policy's longest lifetime: only to show that the retired key no longer verifies.
    long_lived = signer.sign(child(clock, lifetime=1000))
    generation = verifier.key_generation
    clock.t = START + 80
    keys.step()
    assert verifier.key_generation != generation  # verified-token caches start over
    clock.t = START + 99
    old_token = signer.sign(child(clock))
    clock.t = START + 100
    keys.step()
    new_token = signer.sign(child(clock))
    assert kid_of(new_token) != kid_of(old_token)
    assert verifier.verify(old_token).token_id == "child-1"  # retiring: still verifies
    assert verifier.verify(new_token).token_id == "child-1"
    assert verifier.verify(long_lived).token_id == "child-1"
    clock.t = START + 130
    keys.step()
    with pytest.raises(ParentRejected) as refused:
        verifier.verify(long_lived)
    assert refused.value.detail == "unknown kid"


def test_a_failing_directory_is_logged_once_the_keys_in_hand_sign_on_and_recovery_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The background thread on the real clock: the directory replaced by a file, then restored."""
    policy = RotationPolicy(interval=60.0, publish_ahead=1.0, longest_lifetime=1.0)  # re-read every 0.1 s
    keys = KeyRotator(KeyDirectory(tmp_path / "keys"), policy, "ES256")
    signer = RotatingSigner(keys.step())
    keys.install = signer.install
    caplog.set_level(logging.INFO, logger="delegation_service.adapters.key_rotation")
    keys.start()
    try:
        (tmp_path / "keys").rename(tmp_path / "moved")
        (tmp_path / "keys").write_text("not a directory")
        wait_for(lambda: events(caplog, "key_directory_failed"), seconds=10)
        time.sleep(0.5)  # several more failing runs
        assert len(events(caplog, "key_directory_failed")) == 1
        assert keys.snapshot is not None
        assert kid_of(signer.sign(child(Clock(time.time())))) == keys.snapshot.key_set.active.kid
        (tmp_path / "keys").unlink()
        (tmp_path / "moved").rename(tmp_path / "keys")
        wait_for(lambda: events(caplog, "key_directory_recovered"), seconds=10)
    finally:
        keys.stop()


def events(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records if getattr(record, "event", None) == event]


def wait_for(condition: Callable[[], object], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
