"""The use cases over the in-memory store, with fakes for the token codec: what Delegate reads and writes,
in which order, and how an operator's chain revocation reports its blast radius (SPEC §3, §5).

No gRPC, no Redis, no JWT library: the verifier maps token strings to claims, the signer names what it
signs, and a spy counts what the store is asked.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from delegation_service import service as use_cases
from delegation_service.adapters.memory_registry import MemoryRegistry
from delegation_service.audit import AuditLog
from delegation_service.domain.catalog import Catalog
from delegation_service.domain.errors import (
    ChainNotFound,
    DeadlineTooShort,
    ParentCannotDelegate,
    ParentRejected,
    ScopesRefused,
)
from delegation_service.domain.policy import DelegationPolicy, DelegationRequest
from delegation_service.domain.ports import AuditSink, TokenRegistry
from delegation_service.domain.revocation import HorizonKey, HorizonKind
from delegation_service.domain.scopes import Bearer, BearerType
from delegation_service.domain.tokens import (
    ChildToken,
    LifetimePolicy,
    TokenKind,
    VerifiedToken,
    root_chain_id,
)
from delegation_service.service import DelegationService

ISSUER = "https://delegation.test.invalid"
UPSTREAM = "https://idp.test.invalid"
NOW = 1_800_000_000
CATALOG = {
    "delegation_scope": "directory.delegations.rw",
    "audiences": {
        "directory": {"scopes": {"delegations": ["Per", "Org"]}},
        "warehouse": {"scopes": {"items": ["Per", "Org"]}},
    },
    "clients": {
        "billing": {"scopes": ["warehouse.items.rw"]},
        "search": {"scopes": ["warehouse.items.r"]},
    },
}


class Clock:
    def __init__(self) -> None:
        self.current = NOW

    def now(self) -> int:
        return self.current


@dataclass
class Codec:
    """Verifier and signer: a token is a name; the verifier knows upstream names and signed children."""

    upstream: dict[str, VerifiedToken] = field(default_factory=dict)
    signed: dict[str, ChildToken] = field(default_factory=dict)

    def verify(self, raw_token: str) -> VerifiedToken:
        if raw_token in self.upstream:
            return self.upstream[raw_token]
        child = self.signed.get(raw_token)
        if child is None:
            raise ParentRejected("unknown test token")
        return VerifiedToken(
            kind=TokenKind.DELEGATED,
            token_id=child.token_id,
            chain_id=child.chain_id,
            issuer=ISSUER,
            subject=child.subject,
            client_id=child.client_id,
            audiences=child.audiences,
            scopes=tuple(str(scope) for scope in child.scopes),
            bearer=child.bearer,
            issued_at=child.issued_at,
            expires_at=child.expires_at,
            parent_token_id=child.parent_token_id,
            actor_client_id=child.actor_client_id,
        )

    def sign(self, child: ChildToken) -> str:
        raw = f"child:{child.token_id}"
        self.signed[raw] = child
        return raw

    def jwks(self) -> Mapping[str, object]:
        return {"keys": []}


class Spy:
    """Counts the store calls the use cases make, and passes them on."""

    def __init__(self, inner: TokenRegistry) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        self.calls[name] += 1
        return getattr(self.inner, name)


@dataclass
class World:
    service: DelegationService
    codec: Codec
    store: MemoryRegistry
    spy: Spy
    clock: Clock
    parents: Iterator[int] = field(default_factory=lambda: iter(range(1, 1_000_000)))

    def parent(self, subject: str = "alice") -> str:
        """A fresh upstream parent (a chain of its own)."""
        name = f"parent-{next(self.parents)}"
        self.codec.upstream[name] = VerifiedToken(
            kind=TokenKind.UPSTREAM,
            token_id=name,
            chain_id=root_chain_id(UPSTREAM, name),
            issuer=UPSTREAM,
            subject=subject,
            client_id="gateway",
            audiences=("delegation",),
            scopes=("directory.delegations.rw", "warehouse.items.rw"),
            bearer=Bearer(BearerType.PERSON, subject),
            issued_at=self.clock.now() - 10,
            expires_at=self.clock.now() + 3600,
        )
        return name

    def chain_of(self, parent: str) -> str:
        return self.codec.upstream[parent].chain_id


PORTS = ("tokens", "revocations", "chains", "health")


def new_service(
    codec: Codec, clock: Clock, store: Any, audit: AuditSink | None = None, **ports: Any
) -> DelegationService:
    """The use cases over ``store``, given as every port unless ``ports`` names another for one."""
    return DelegationService(
        issuer=ISSUER,
        verifier=codec,
        signer=codec,
        **{name: ports.get(name, store) for name in PORTS},
        policy=DelegationPolicy(Catalog.from_mapping(CATALOG)),
        lifetimes=LifetimePolicy(900, 3600),
        clock=clock,
        max_parent_age_seconds=86_400,
        audit=audit or AuditLog(),
    )


@pytest.fixture
def world() -> World:
    clock = Clock()
    codec = Codec()
    store = MemoryRegistry(clock, horizon_retention_seconds=90_000)
    spy = Spy(store)
    return World(new_service(codec, clock, spy), codec, store, spy, clock)


def delegate(
    world: World, parent: str, client_id: str = "billing", **options: Any
) -> use_cases.DelegateResult:
    time_left = options.pop("time_left", None)
    request = DelegationRequest(client_id, ("warehouse.items.r",), **options)
    return world.service.delegate(parent, request, time_left=time_left)


# -- ports ------------------------------------------------------------------------------------------


def test_each_use_case_reaches_the_store_only_through_its_own_port(world: World) -> None:
    # The store is given as four narrow ports; a spy on each shows which use case uses which.
    ports = {name: Spy(world.store) for name in PORTS}
    service = new_service(world.codec, world.clock, world.store, **ports)
    parent = world.parent()
    uses: dict[str, Counter[str]] = {}

    def used(action: Any) -> None:
        for spy in ports.values():
            spy.calls.clear()
        action()
        uses[action.__name__] = Counter({name: spy.calls.total() for name, spy in ports.items() if spy.calls})

    def delegating() -> None:
        child = service.delegate(parent, DelegationRequest("billing", ("warehouse.items.r",)))
        assert child.access_token is not None
        assert service.introspect(child.access_token).active

    def viewing() -> None:
        service.get_chain(world.chain_of(parent))

    def revoking() -> None:
        service.revoke_subject("alice")
        service.revoke_chain(world.chain_of(parent), dry_run=True)
        service.revoke(parent)

    def probing() -> None:
        assert service.ready()

    for action in (delegating, viewing, revoking, probing):
        used(action)

    assert uses == {
        "delegating": Counter({"tokens": 2}),
        "viewing": Counter({"chains": 1}),
        "revoking": Counter({"revocations": 3}),
        "probing": Counter({"health": 1}),
    }


class AuditTrail:
    """An :class:`AuditSink` that keeps the events in a list, for the tests."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def record(self, message: str, *, event: str, outcome: str, **fields: object) -> None:
        self.events.append((message, event, outcome))


def test_audit_events_go_to_the_sink_the_composition_root_gives(world: World) -> None:
    trail = AuditTrail()
    service = new_service(world.codec, world.clock, world.store, audit=trail)
    parent = world.parent()

    service.delegate(parent, DelegationRequest("billing", ("warehouse.items.r",)))
    with pytest.raises(ScopesRefused):
        service.delegate(parent, DelegationRequest("billing", ("warehouse.nothing.r",)))
    service.revoke_subject("alice", caller="ops")

    assert trail.events == [
        ("delegate minted", "delegate", "minted"),
        ("delegate denied", "delegate", "denied"),
        ("revoke", "revoke", "revoked"),
    ]


# -- Delegate -----------------------------------------------------------------------------------------


def test_delegating_from_an_upstream_parent_is_one_store_call(world: World) -> None:
    parent = world.parent()

    result = delegate(world, parent)

    assert result.access_token == f"child:{result.child.token_id}"
    assert world.spy.calls == Counter({"mint": 1})
    recorded = world.store.record(result.child.chain_id, result.child.token_id)
    assert recorded is not None and recorded.client_id == "billing"


@pytest.mark.parametrize(
    "revoke",
    [
        lambda w, p: w.service.revoke(p),
        lambda w, p: w.store.revoke_horizon(HorizonKey(HorizonKind.SUBJECT, "alice"), NOW, NOW),
        lambda w, p: w.store.revoke_horizon(HorizonKey(HorizonKind.CLIENT, "gateway"), NOW, NOW),
    ],
    ids=["chain", "subject", "client"],
)
def test_a_revoked_parent_is_refused_by_the_mint_and_nothing_is_recorded(world: World, revoke: Any) -> None:
    parent = world.parent()
    first = delegate(world, parent).child
    revoke(world, parent)
    world.spy.calls.clear()

    with pytest.raises(ParentRejected) as refused:
        delegate(world, parent)

    assert refused.value.detail == "parent is revoked"
    assert world.spy.calls == Counter({"mint": 1})
    chain = world.store.chain(first.chain_id, 10)
    assert chain is not None and len(chain.records) == 2  # the root and the first child only


def test_a_revoked_parent_is_told_so_before_any_scope_refusal(world: World) -> None:
    parent = world.parent()
    world.service.revoke(parent)
    world.spy.calls.clear()

    with pytest.raises(ParentRejected):
        world.service.delegate(parent, DelegationRequest("billing", ("warehouse.items.rwx",)))

    assert world.spy.calls == Counter({"snapshot": 1})  # only a refused request pays the extra read


def test_a_scope_refusal_for_an_active_parent_is_reported_as_such(world: World) -> None:
    with pytest.raises(ScopesRefused):
        world.service.delegate(world.parent(), DelegationRequest("billing", ("warehouse.items.rwx",)))


def test_a_delegated_token_cannot_delegate_and_an_unknown_one_is_rejected(world: World) -> None:
    child = delegate(world, world.parent()).access_token
    assert child is not None
    world.spy.calls.clear()

    with pytest.raises(ParentCannotDelegate):
        delegate(world, child)
    forged = replace(world.codec.signed[child], token_id="never-recorded")
    world.codec.signed["forged"] = forged
    with pytest.raises(ParentRejected) as refused:
        delegate(world, "forged")
    assert refused.value.detail == "parent is unknown"
    assert world.spy.calls == Counter({"snapshot": 2})  # a delegated parent is read, never minted from


def test_validate_only_reads_the_parent_and_writes_nothing(world: World) -> None:
    parent = world.parent()

    result = delegate(world, parent, validate_only=True)

    assert result.access_token is None
    assert world.spy.calls == Counter({"snapshot": 1})
    world.service.revoke(parent)
    with pytest.raises(ParentRejected):
        delegate(world, parent, validate_only=True)


def test_too_little_time_before_minting_mints_nothing(world: World) -> None:
    parent = world.parent()
    answers = iter([1.0, use_cases.MINT_MARGIN_SECONDS / 2])

    with pytest.raises(DeadlineTooShort):
        delegate(world, parent, time_left=lambda: next(answers))

    assert "mint" not in world.spy.calls
    assert world.codec.signed == {}


def test_a_deadline_that_runs_out_while_recording_gets_nothing_signed(world: World) -> None:
    parent = world.parent()
    answers = iter([1.0, 1.0, 0.0])

    with pytest.raises(DeadlineTooShort):
        delegate(world, parent, time_left=lambda: next(answers))

    assert world.spy.calls == Counter({"mint": 1})
    assert world.codec.signed == {}


# -- RevokeChain ----------------------------------------------------------------------------------------


def test_revoke_chain_reports_the_unexpired_tokens_and_their_clients(world: World) -> None:
    parent = world.parent()
    children = [delegate(world, parent, client).access_token for client in ("billing", "search", "billing")]
    world.service.revoke(children[1] or "")  # revoked on its own before: still counted (no per-token read)
    world.clock.current += 1
    chain_id = world.chain_of(parent)

    dry = world.service.revoke_chain(chain_id, dry_run=True)
    done = world.service.revoke_chain(chain_id)
    again = world.service.revoke_chain(chain_id)

    assert (dry.revoked_token_count, dry.client_ids, dry.dry_run, dry.revoked_at) == (
        4,
        ("billing", "gateway", "search"),
        True,
        None,
    )
    assert (done.revoked_token_count, done.client_ids, done.revoked_at) == (4, dry.client_ids, NOW + 1)
    assert (again.revoked_token_count, again.client_ids) == (0, ())  # it was revoked already
    with pytest.raises(ParentRejected):
        delegate(world, parent)


def test_revoke_chain_leaves_out_expired_tokens(world: World) -> None:
    parent = world.parent()
    delegate(world, parent, lifetime_seconds=60)
    delegate(world, parent, "search")
    world.clock.current += 120

    radius = world.service.revoke_chain(world.chain_of(parent), dry_run=True)

    assert (radius.revoked_token_count, radius.client_ids) == (2, ("gateway", "search"))


def test_revoke_chain_of_one_child_reads_its_record_and_revokes_it_alone(world: World) -> None:
    parent = world.parent()
    first, second = (delegate(world, parent, client).child for client in ("billing", "search"))
    chain_id = world.chain_of(parent)

    radius = world.service.revoke_chain(chain_id, token_id=second.token_id)

    assert (radius.revoked_token_count, radius.client_ids) == (1, ("search",))
    assert not world.service.introspect(f"child:{second.token_id}").active
    assert world.service.introspect(f"child:{first.token_id}").active
    again = world.service.revoke_chain(chain_id, token_id=second.token_id)
    assert again.revoked_token_count == 0


def test_revoke_chain_by_the_roots_id_revokes_the_whole_chain(world: World) -> None:
    parent = world.parent()
    child = delegate(world, parent).child

    radius = world.service.revoke_chain(child.chain_id, token_id=parent)

    assert radius.revoked_token_count == 2
    assert not world.service.introspect(f"child:{child.token_id}").active


def test_revoke_chain_of_an_unknown_chain_or_token_is_not_found_and_writes_nothing(world: World) -> None:
    parent = world.parent()
    delegate(world, parent)

    with pytest.raises(ChainNotFound):
        world.service.revoke_chain("no-such-chain")
    with pytest.raises(ChainNotFound):
        world.service.revoke_chain(world.chain_of(parent), token_id="no-such-token")
    assert list(world.store.events(None, 10)) == []


# -- GetChain -----------------------------------------------------------------------------------------


def test_get_chain_lists_at_most_the_view_limit(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(use_cases, "CHAIN_VIEW_LIMIT", 3)
    parent = world.parent()
    for _ in range(5):
        delegate(world, parent)

    view = world.service.get_chain(world.chain_of(parent))

    assert len(view.tokens) == 3
    assert view.tokens[0][0].kind is TokenKind.UPSTREAM
