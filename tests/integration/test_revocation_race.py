"""Delegating from a parent while an operator revokes its chain (SPEC §5; Vault's lesson: no child may
escape its chain).

The chain marker and every child's record live in the chain's slot, and recording a child is one script
that refuses a marked chain: a child is either recorded before the marker (which then covers it) or not
at all. So once RevokeChain returns, no child of the chain, including those minted during the race,
is ever active. Runs on the single node and on the 3-master cluster (the ``harness`` fixture).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import grpc

from delegation_service.client import DelegationClient, error_details
from tests.integration.harness import Harness

ROUNDS = 5
DELEGATING_THREADS = 6
CALLS_PER_THREAD = 150
ROUND_SECONDS_LIMIT = 15.0
REFUSALS_TO_STOP = 3
"""A thread stops after this many refusals that started once RevokeChain had returned."""


@dataclass
class Minted:
    token: str
    started: float
    returned: float


@dataclass
class Race:
    """What the delegating threads saw in one round."""

    minted: list[Minted] = field(default_factory=list)
    refused_after_revoke: int = 0
    other_errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def delegate_until_refused(
    harness: Harness, parent: str, race: Race, revoked: threading.Event, revoked_at: list[float]
) -> None:
    give_up = time.monotonic() + ROUND_SECONDS_LIMIT
    refusals = 0
    with harness.client(timeout=5.0) as client:
        for _ in range(CALLS_PER_THREAD):
            if time.monotonic() > give_up or refusals >= REFUSALS_TO_STOP:
                return
            started = time.monotonic()
            try:
                response = client.delegate(parent, "billing", ["warehouse.items.r"])
            except grpc.RpcError as error:
                details = error_details(error)
                with race.lock:
                    if details.reason != "INVALID_PARENT_TOKEN":
                        race.other_errors.append(f"{details.code.name} {details.reason}")
                    elif revoked.is_set() and started >= revoked_at[0]:
                        race.refused_after_revoke += 1
                        refusals += 1
                continue
            with race.lock:
                race.minted.append(Minted(response.access_token, started, time.monotonic()))


def run_round(harness: Harness, client: DelegationClient) -> tuple[Race, float]:
    parent = harness.parent()
    chain_id = client.delegate(parent, "billing", ["warehouse.items.r"]).chain_id
    race = Race()
    revoked = threading.Event()
    revoked_at: list[float] = []
    threads = [
        threading.Thread(target=delegate_until_refused, args=(harness, parent, race, revoked, revoked_at))
        for _ in range(DELEGATING_THREADS)
    ]
    for thread in threads:
        thread.start()
    # Let the threads get going, so the revocation lands among Delegate calls in flight.
    deadline = time.monotonic() + 5.0
    while len(race.minted) < DELEGATING_THREADS * 2 and time.monotonic() < deadline:
        time.sleep(0.005)

    client.revoke_chain(chain_id, justification="race test")
    revoked_at.append(time.monotonic())
    revoked.set()
    with race.lock:
        minted_so_far = [m.token for m in race.minted]
    # Right after RevokeChain returns: everything minted so far is inactive.
    assert not any(client.introspect(token).active for token in minted_so_far)

    for thread in threads:
        thread.join(timeout=ROUND_SECONDS_LIMIT + 10)
    assert not any(thread.is_alive() for thread in threads)
    return race, revoked_at[0]


def test_no_child_minted_around_a_chain_revocation_is_ever_active(
    harness: Harness, client: DelegationClient
) -> None:
    in_flight_at_revoke = 0
    for _ in range(ROUNDS):
        race, revoked_at = run_round(harness, client)

        assert race.other_errors == []
        assert race.minted, "nothing was minted before the revocation"
        assert race.refused_after_revoke > 0, "no Delegate call met the revoked chain"
        # No Delegate that started after RevokeChain returned minted anything...
        assert [m for m in race.minted if m.started >= revoked_at] == []
        # ...and every child, including those whose Delegate was in flight when the revocation
        # landed, is inactive.
        assert not any(client.introspect(m.token).active for m in race.minted)
        in_flight_at_revoke += sum(1 for m in race.minted if m.returned >= revoked_at)
    # Not required (timing decides), but reported: children whose Delegate returned after the revoke.
    print(f"\nrace: {ROUNDS} rounds; {in_flight_at_revoke} children returned after RevokeChain returned")
