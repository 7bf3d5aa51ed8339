"""The rotation schedule: a pure function of key creation times, interval, publish-ahead and lifetime."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from delegation_service.domain.rotation import (
    PUBLISHED_STATES,
    KeyRecord,
    KeyState,
    RotationPolicy,
    schedule,
)

POLICY = RotationPolicy(interval=100.0, publish_ahead=20.0, longest_lifetime=30.0)


def rotated_keys(policy: RotationPolicy, start: float, until: float, pauses: list[float]) -> list[KeyRecord]:
    """The keys a rotator creates from ``start`` to ``until``, checking at each due time, plus a pause
    of ``pauses[i]`` seconds (a process that was down, or slow) before its i-th creation."""
    keys: list[KeyRecord] = []
    t = start
    while t <= until:
        due = schedule(keys, policy, t).next_due_at
        if due <= t:
            keys.append(KeyRecord(len(keys), t, f"k{len(keys)}"))
            continue
        pause = pauses[len(keys) % len(pauses)] if pauses else 0.0
        t = due + pause
    return keys


def states(keys: list[KeyRecord], policy: RotationPolicy, t: float) -> dict[str, KeyState]:
    return {timeline.key.kid: timeline.state for timeline in schedule(keys, policy, t).keys}


def test_a_first_key_signs_at_once_and_the_next_is_due_interval_less_publish_ahead_later() -> None:
    first = [KeyRecord(0, 1000.0, "a")]
    now = schedule(first, POLICY, 1000.0)
    assert now.active is not None and now.active.key.kid == "a"
    assert now.next_due_at == 1080.0


def test_a_key_is_pending_then_active_then_retiring_then_retired() -> None:
    keys = [KeyRecord(0, 1000.0, "a"), KeyRecord(1, 1080.0, "b")]
    assert states(keys[:1], POLICY, 1079.0) == {"a": KeyState.ACTIVE}
    assert states(keys, POLICY, 1080.0) == {"a": KeyState.ACTIVE, "b": KeyState.PENDING}
    assert states(keys, POLICY, 1099.9) == {"a": KeyState.ACTIVE, "b": KeyState.PENDING}
    assert states(keys, POLICY, 1100.0) == {"a": KeyState.RETIRING, "b": KeyState.ACTIVE}
    assert states(keys, POLICY, 1129.9) == {"a": KeyState.RETIRING, "b": KeyState.ACTIVE}
    assert states(keys, POLICY, 1130.0) == {"a": KeyState.RETIRED, "b": KeyState.ACTIVE}


def test_no_key_and_the_first_is_due_now() -> None:
    empty = schedule([], POLICY, 5.0)
    assert empty.active is None and empty.keys == ()
    assert empty.next_due_at == 5.0


def test_after_a_downtime_the_current_key_signs_on_until_the_late_key_was_published_ahead() -> None:
    keys = [KeyRecord(0, 0.0, "a"), KeyRecord(1, 500.0, "b")]  # b was due at 80, created at 500
    assert states(keys, POLICY, 519.0) == {"a": KeyState.ACTIVE, "b": KeyState.PENDING}
    assert states(keys, POLICY, 520.0) == {"a": KeyState.RETIRING, "b": KeyState.ACTIVE}
    assert schedule(keys, POLICY, 520.0).next_due_at == 600.0


def test_a_key_created_on_a_clock_behind_never_activates_before_the_key_before_it() -> None:
    keys = [KeyRecord(0, 0.0, "a"), KeyRecord(1, 80.0, "b"), KeyRecord(2, 70.0, "c")]
    timelines = schedule(keys, POLICY, 120.0).keys
    assert [t.activates_at for t in timelines] == [0.0, 100.0, 100.0]
    assert states(keys, POLICY, 120.0) == {
        "a": KeyState.RETIRING,
        "b": KeyState.RETIRING,
        "c": KeyState.ACTIVE,
    }


def test_a_key_created_on_a_clock_ahead_still_leaves_one_signing_key() -> None:
    ahead = schedule([KeyRecord(0, 1000.0, "a")], POLICY, 990.0)
    assert ahead.active is not None and ahead.active.key.kid == "a"


def test_two_keys_of_one_generation_are_refused() -> None:
    with pytest.raises(ValueError, match="one key per generation"):
        schedule([KeyRecord(0, 0.0, "a"), KeyRecord(0, 1.0, "b")], POLICY, 2.0)


@pytest.mark.parametrize(
    ("interval", "publish_ahead", "lifetime"),
    [(10.0, 10.0, 0.0), (10.0, 0.0, 0.0), (10.0, 11.0, 0.0), (10.0, 5.0, -1.0)],
)
def test_a_policy_needs_a_positive_publish_ahead_shorter_than_the_interval(
    interval: float, publish_ahead: float, lifetime: float
) -> None:
    with pytest.raises(ValueError, match=r"publish_ahead|longest_lifetime"):
        RotationPolicy(interval, publish_ahead, lifetime)


def test_verifier_caches_may_live_the_publish_ahead_less_the_reread_period() -> None:
    assert RotationPolicy(86400.0, 3600.0, 3630.0).max_cache_seconds == 3570.0
    assert RotationPolicy(10.0, 3.0, 4.0).reread_seconds == pytest.approx(0.3)
    assert RotationPolicy(10.0, 3.0, 4.0).max_cache_seconds == pytest.approx(2.7)


def test_next_change_is_the_next_activation_retirement_or_due_time() -> None:
    keys = [KeyRecord(0, 1000.0, "a"), KeyRecord(1, 1080.0, "b")]
    assert schedule(keys, POLICY, 1085.0).next_change_at() == 1100.0  # b activates
    assert schedule(keys, POLICY, 1100.0).next_change_at() == 1130.0  # a retires
    assert schedule(keys, POLICY, 1130.0).next_change_at() == 1180.0  # the next key is due


policies = st.builds(
    lambda interval, ahead_share, lifetime: RotationPolicy(interval, interval * ahead_share, lifetime),
    st.floats(10.0, 1000.0),
    st.floats(0.05, 0.95),
    st.floats(0.0, 3000.0),
)
pauses = st.lists(st.floats(0.0, 2000.0), max_size=5)


@settings(max_examples=200, deadline=None)
@given(policies, st.floats(0.0, 1e6), pauses, st.data())
def test_exactly_one_key_signs_at_any_time(
    policy: RotationPolicy, start: float, pause: list[float], data: st.DataObject
) -> None:
    keys = rotated_keys(policy, start, start + 10 * policy.interval, pause)
    t = data.draw(st.floats(start, start + 12 * policy.interval))
    created = [k for k in keys if k.created_at <= t]
    assert list(states(created, policy, t).values()).count(KeyState.ACTIVE) == 1


@settings(max_examples=200, deadline=None)
@given(policies, st.floats(0.0, 1e6), pauses, st.data())
def test_no_key_signs_before_it_was_published_for_publish_ahead_except_the_first(
    policy: RotationPolicy, start: float, pause: list[float], data: st.DataObject
) -> None:
    """The property a caching verifier relies on: a kid it sees was in the JWKS ``publish_ahead`` ago."""
    keys = rotated_keys(policy, start, start + 10 * policy.interval, pause)
    t = data.draw(st.floats(start, start + 12 * policy.interval))
    active = schedule([k for k in keys if k.created_at <= t], policy, t).active
    assert active is not None
    # The sum the schedule computes, not t - created_at: floats round (177.0 - 168.15 < 8.85).
    assert active.key.generation == 0 or t >= active.key.created_at + policy.publish_ahead


@settings(max_examples=200, deadline=None)
@given(policies, st.floats(0.0, 1e6), pauses, st.data())
def test_a_key_stays_published_for_the_longest_lifetime_after_its_last_signature(
    policy: RotationPolicy, start: float, pause: list[float], data: st.DataObject
) -> None:
    keys = rotated_keys(policy, start, start + 10 * policy.interval, pause)
    signed_at = data.draw(st.floats(start, start + 10 * policy.interval))
    later = signed_at + data.draw(st.floats(0.0, policy.longest_lifetime))
    active = schedule([k for k in keys if k.created_at <= signed_at], policy, signed_at).active
    assert active is not None
    state_later = states([k for k in keys if k.created_at <= later], policy, later)[active.key.kid]
    assert state_later in PUBLISHED_STATES


@settings(max_examples=200, deadline=None)
@given(policies, st.floats(0.0, 1e6), st.data())
def test_without_pauses_keys_sign_one_interval_each(
    policy: RotationPolicy, start: float, data: st.DataObject
) -> None:
    keys = rotated_keys(policy, start, start + 10 * policy.interval, [])
    timelines = schedule(keys, policy, start + 11 * policy.interval).keys
    spans = [t.superseded_at - t.activates_at for t in timelines[1:] if t.superseded_at is not None]
    assert spans and all(span == pytest.approx(policy.interval) for span in spans)


@settings(max_examples=200, deadline=None)
@given(policies, st.floats(0.0, 1e6), pauses, st.data())
def test_states_only_move_forward_in_time(
    policy: RotationPolicy, start: float, pause: list[float], data: st.DataObject
) -> None:
    keys = rotated_keys(policy, start, start + 10 * policy.interval, pause)
    order = [KeyState.PENDING, KeyState.ACTIVE, KeyState.RETIRING, KeyState.RETIRED]
    t1 = data.draw(st.floats(start, start + 12 * policy.interval))
    t2 = t1 + data.draw(st.floats(0.0, 5 * policy.interval))
    before = states(keys, policy, t1)
    after = states(keys, policy, t2)
    for kid, state in before.items():
        # A pending key may skip active (superseded at once after a clock step), never go back.
        assert order.index(after[kid]) >= order.index(state)


@settings(max_examples=200, deadline=None)
@given(policies, st.floats(0.0, 1e6), pauses, st.data())
def test_removing_retired_keys_changes_no_other_state(
    policy: RotationPolicy, start: float, pause: list[float], data: st.DataObject
) -> None:
    """Processes delete retired key files; the others' schedule must not move when they do."""
    keys = rotated_keys(policy, start, start + 10 * policy.interval, pause)
    t = data.draw(st.floats(start, start + 12 * policy.interval))
    full = states(keys, policy, t)
    kept = [k for k in keys if full[k.kid] is not KeyState.RETIRED]
    pruned = states(kept, policy, t)
    assert pruned == {kid: state for kid, state in full.items() if state is not KeyState.RETIRED}
    activations = {timeline.key.kid: timeline.activates_at for timeline in schedule(keys, policy, t).keys}
    assert {timeline.key.kid: timeline.activates_at for timeline in schedule(kept, policy, t).keys} == {
        kid: activations[kid] for kid in pruned
    }
    later = t + data.draw(st.floats(0.0, 3 * policy.interval))
    assert states(kept, policy, later) == {
        kid: state for kid, state in states(keys, policy, later).items() if kid in pruned
    }


@settings(max_examples=200, deadline=None)
@given(policies, st.floats(0.0, 1e6), st.data())
def test_at_most_one_key_is_pending(policy: RotationPolicy, start: float, data: st.DataObject) -> None:
    keys = rotated_keys(policy, start, start + 10 * policy.interval, [])
    t = data.draw(st.floats(start, start + 10 * policy.interval))
    created = [k for k in keys if k.created_at <= t]
    assert list(states(created, policy, t).values()).count(KeyState.PENDING) <= 1
