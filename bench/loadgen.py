"""The load generator: a separate process (``multiprocessing``, spawn) driving a server with ``grpc.aio``.

It takes commands over a pipe from the orchestrator, one at a time:

* ``setup``: mint, through the service's own ``Delegate``, the pools later phases use (children to
  introspect, children to revoke, chains to revoke);
* ``prepare``: build one phase's requests, open its channels and warm up. Phases that must not benefit
  from any cache get tokens never presented before: fresh parents for ``Delegate``, and for
  ``Introspect`` fresh children, signed with the service's own signer and key and recorded with the
  registry's own ``mint`` (pipelined), exactly as ``Delegate`` would have left them;
* ``run``: run the prepared phase and report rps, latency percentiles, errors and its own CPU;
* ``stop``.

Every loop is bounded in count (``max_calls``) and in time (``duration``); every call has a deadline.
Each of the ``channels`` channels is its own TCP connection (local subchannel pool), so servers sharing a
port through SO_REUSEPORT all get traffic.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import secrets
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import grpc.aio
import redis

from bench import scale
from bench.common import (
    CHILD_CLIENT,
    CHILD_LIFETIME_SECONDS,
    CHILD_SCOPES,
    ECHO_METHOD,
    PARENT_CLIENT,
    PARENT_LIFETIME_SECONDS,
    PARENT_SCOPES,
    PEER_CLIENT_ID,
    PEER_CLIENT_SECRET,
    PEER_RESOURCE,
    PEER_SCOPES,
    SERVICE_ISSUER,
    UPSTREAM_ISSUER,
    subject_for,
    token_exchange_body,
)
from delegation.v1 import admin_pb2, admin_pb2_grpc, delegation_pb2, delegation_pb2_grpc
from delegation_service.adapters.jwt_codec import JwtSigner
from delegation_service.adapters.keys import KeySet, load_private_key_file
from delegation_service.adapters.upstream_dev import DevUpstreamIssuer
from delegation_service.domain.revocation import record_child
from delegation_service.domain.scopes import Bearer, BearerType, parse_scope
from delegation_service.domain.tokens import ChildToken

CALL_TIMEOUT_SECONDS = 10.0
SETUP_CONCURRENCY = 32
SETUP_CHILDREN_PER_PARENT = 20
SETUP_SECONDS = 120.0
CHILDREN_PER_ROOT = 500
HTTP_PATHS = {"Grant": "/token", "TokenExchange": "/oauth2/token", "TokenExchangeWarm": "/oauth2/token"}
"""Phases over HTTP rather than gRPC, and their endpoint: the peer's token endpoint, or ours (RFC 8693)."""
FORM_HEADERS = {"content-type": "application/x-www-form-urlencoded"}
GRANT_HEADERS = {
    "authorization": "Basic "
    + base64.b64encode(f"{PEER_CLIENT_ID}:{PEER_CLIENT_SECRET}".encode()).decode("ascii"),
    **FORM_HEADERS,
}
GRANT_BODY = urllib.parse.urlencode(
    {"grant_type": "client_credentials", "scope": " ".join(PEER_SCOPES), "resource": PEER_RESOURCE}
).encode()


@dataclass
class Phase:
    """One measured phase: where, what, how many in flight, and its bounds."""

    address: str
    rpc: str  # Delegate(Warm), Introspect(Warm), Revoke, RevokeChain, Echo, Grant, TokenExchange(Warm)
    concurrency: int
    duration: float
    max_calls: int
    warmup: float
    warmup_calls: int
    channels: int

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Phase:
        """From the orchestrator's message."""
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})


@dataclass
class Outcome:
    """What one bounded run of calls produced."""

    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0
    cpu: float = 0.0
    stopped_by: str = "time"


class LoadGenerator:
    """State kept across commands: the upstream issuer, the pools, the prepared phase and its channels."""

    def __init__(self, upstream_key: Path, signing_key: Path, redis_url: str, operator_secret: str) -> None:
        self._upstream = DevUpstreamIssuer(UPSTREAM_ISSUER, key=load_private_key_file(upstream_key, "ES256"))
        self._signer = JwtSigner(KeySet(load_private_key_file(signing_key, "ES256")))
        self._redis = redis.Redis.from_url(redis_url, socket_timeout=60)
        self._operator = (("authorization", f"Bearer {operator_secret}"),)
        self._minted = 0
        self._roots = 0
        self.introspect_pool: list[str] = []
        self.revoke_pool: list[str] = []
        self.chain_pool: list[str] = []
        self._channels: list[grpc.aio.Channel] = []
        self._http: aiohttp.ClientSession | None = None
        self._phase: Phase | None = None
        self._requests: Callable[[int], Any] | None = None

    # -- requests ---------------------------------------------------------------------------------------

    def parent(self) -> str:
        """A fresh upstream parent token (a new chain)."""
        self._minted += 1
        return self._upstream.mint(
            subject_for(self._minted), PARENT_SCOPES, PARENT_CLIENT, lifetime_seconds=PARENT_LIFETIME_SECONDS
        )

    def children(self, count: int) -> list[str]:
        """``count`` fresh child tokens, signed and recorded as the service's ``Delegate`` would."""
        now = int(time.time())
        stand_in = scale.PipelinedScripts(self._redis)
        registry = scale.service_registry(stand_in)
        scopes = tuple(parse_scope(s) for s in CHILD_SCOPES)
        tokens = []
        root = scale.root_record("unused", now)
        for index in range(count):
            if index % CHILDREN_PER_ROOT == 0:
                self._roots += 1
                root = scale.root_record(f"loadgen-{self._roots}", now)
            child = ChildToken(
                token_id=secrets.token_urlsafe(16),
                chain_id=root.chain_id,
                parent_token_id=root.token_id,
                issuer=SERVICE_ISSUER,
                subject=root.subject,
                audiences=("warehouse",),
                client_id=CHILD_CLIENT,
                actor_client_id=root.client_id,
                scopes=scopes,
                bearer=Bearer(BearerType.PERSON, root.subject),
                issued_at=now,
                expires_at=now + CHILD_LIFETIME_SECONDS,
            )
            registry.mint(root, record_child(child, root))
            tokens.append(self._signer.sign(child))
        stand_in.flush()
        if stand_in.refused:
            raise RuntimeError(f"{stand_in.refused} child records were refused")
        return tokens

    def _delegate_request(self, parent: str) -> delegation_pb2.DelegateRequest:
        return delegation_pb2.DelegateRequest(
            parent_token=parent, client_id=CHILD_CLIENT, scopes=CHILD_SCOPES
        )

    def _request_factory(self, phase: Phase) -> Callable[[int], Any]:
        total = phase.max_calls + phase.warmup_calls
        if phase.rpc == "Delegate":
            # A fresh parent for every call: nothing about the parent can be cached or known.
            delegates = [self._delegate_request(self.parent()) for _ in range(total)]
            return delegates.__getitem__
        if phase.rpc == "DelegateWarm":
            # One parent for the whole phase, as a gateway reuses its user's token for many children.
            warm = self._delegate_request(self.parent())
            return lambda _index: warm
        if phase.rpc == "Introspect":
            # A fresh child for every call: no verification of it can have been cached.
            fresh = [delegation_pb2.IntrospectRequest(token=t) for t in self.children(total)]
            return fresh.__getitem__
        if phase.rpc == "IntrospectWarm":
            # A pool of children minted through Delegate at start, presented again and again.
            return _cycle([delegation_pb2.IntrospectRequest(token=t) for t in self.introspect_pool])
        if phase.rpc == "Revoke":
            return _cycle([delegation_pb2.RevokeRequest(token=t) for t in self.revoke_pool])
        if phase.rpc == "RevokeChain":
            return _cycle(
                [admin_pb2.RevokeChainRequest(chain_id=c, justification="bench") for c in self.chain_pool]
            )
        if phase.rpc == "Echo":
            payload = self._delegate_request(self.parent()).SerializeToString()
            return lambda _index: payload
        if phase.rpc == "Grant":
            return lambda _index: GRANT_BODY
        if phase.rpc == "TokenExchange":
            # Delegate's fresh scenario over HTTP: a new parent, hence a new chain, every call.
            exchanges = [token_exchange_body(self.parent()) for _ in range(total)]
            return exchanges.__getitem__
        if phase.rpc == "TokenExchangeWarm":
            warm_body = token_exchange_body(self.parent())
            return lambda _index: warm_body
        raise ValueError(f"unknown rpc {phase.rpc!r}")

    def _callable(self, channel: grpc.aio.Channel, rpc: str) -> Callable[[Any], Any]:
        timeout = CALL_TIMEOUT_SECONDS
        if rpc == "Echo":
            echo: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(ECHO_METHOD)
            return lambda request: echo(request, timeout=timeout)
        if rpc == "RevokeChain":
            admin = admin_pb2_grpc.DelegationAdminServiceStub(channel)
            return lambda request: admin.RevokeChain(request, timeout=timeout, metadata=self._operator)
        public = delegation_pb2_grpc.DelegationServiceStub(channel)
        # Both Delegate scenarios call Delegate, both Introspect scenarios call Introspect.
        method: Callable[..., Any] = getattr(public, rpc.removesuffix("Warm"))
        return lambda request: method(request, timeout=timeout)

    def _calls(self, phase: Phase) -> list[Callable[[Any], Any]]:
        """One callable per open channel (gRPC), or the one HTTP session's."""
        if phase.rpc in HTTP_PATHS:
            session, url = self._http, f"http://{phase.address}{HTTP_PATHS[phase.rpc]}"
            headers = GRANT_HEADERS if phase.rpc == "Grant" else FORM_HEADERS
            if session is None:
                raise RuntimeError("no HTTP session: prepare did not open one")

            async def grant(body: bytes) -> tuple[int, bytes]:
                async with session.post(url, data=body, headers=headers) as response:
                    return response.status, await response.read()

            return [grant]
        return [self._callable(c, phase.rpc) for c in self._channels]

    # -- running ----------------------------------------------------------------------------------------

    async def _open(self, address: str, count: int) -> list[grpc.aio.Channel]:
        channels = [
            grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(count)
        ]
        await asyncio.wait_for(asyncio.gather(*(c.channel_ready() for c in channels)), CALL_TIMEOUT_SECONDS)
        return channels

    async def _close(self) -> None:
        for channel in self._channels:
            await channel.close()
        self._channels = []
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _drive(
        self,
        calls: Sequence[Callable[[Any], Any]],
        requests: Callable[[int], Any],
        *,
        concurrency: int,
        max_calls: int,
        duration: float,
        check: Callable[[Any], str | None],
        first_index: int = 0,
    ) -> Outcome:
        """``concurrency`` closed-loop workers until ``max_calls`` calls or ``duration`` seconds."""
        outcome = Outcome()
        issued = 0
        started = time.perf_counter()
        deadline = started + duration
        cpu_before = time.process_time()

        async def worker(call: Callable[[Any], Any]) -> None:
            nonlocal issued
            while issued < max_calls and time.perf_counter() < deadline:
                request = requests(first_index + issued)
                issued += 1
                begin = time.perf_counter()
                try:
                    problem = check(await call(request))
                except grpc.aio.AioRpcError as error:
                    problem = error.code().name
                except (aiohttp.ClientError, TimeoutError) as error:
                    problem = type(error).__name__
                outcome.latencies.append(time.perf_counter() - begin)
                if problem is not None:
                    outcome.errors[problem] += 1

        await asyncio.gather(*(worker(calls[i % len(calls)]) for i in range(concurrency)))
        outcome.elapsed = time.perf_counter() - started
        outcome.cpu = time.process_time() - cpu_before
        outcome.stopped_by = "count" if issued >= max_calls else "time"
        return outcome

    async def setup(self, address: str, pool_size: int) -> dict[str, Any]:
        """Fill the pools through the service: children to introspect and to revoke, chains to revoke."""
        channels = await self._open(address, 4)
        calls = [self._callable(c, "Delegate") for c in channels]
        children: list[str] = []
        chains: list[str] = []
        errors: Counter[str] = Counter()

        def collect(target: list[str], attribute: str) -> Callable[[Any], str | None]:
            def check(response: Any) -> str | None:
                if not response.access_token:
                    return "no_token"
                target.append(getattr(response, attribute))
                return None

            return check

        # Children come SETUP_CHILDREN_PER_PARENT to a parent; each chain is its own parent.
        parents = [self.parent() for _ in range(max(1, (2 * pool_size) // SETUP_CHILDREN_PER_PARENT + 1))]
        shared = [
            self._delegate_request(parents[i // SETUP_CHILDREN_PER_PARENT]) for i in range(2 * pool_size)
        ]
        outcome = await self._drive(
            calls,
            shared.__getitem__,
            concurrency=SETUP_CONCURRENCY,
            max_calls=len(shared),
            duration=SETUP_SECONDS,
            check=collect(children, "access_token"),
        )
        errors.update(outcome.errors)
        own = [self._delegate_request(self.parent()) for _ in range(pool_size)]
        outcome = await self._drive(
            calls,
            own.__getitem__,
            concurrency=SETUP_CONCURRENCY,
            max_calls=len(own),
            duration=SETUP_SECONDS,
            check=collect(chains, "chain_id"),
        )
        errors.update(outcome.errors)
        for channel in channels:
            await channel.close()
        self.introspect_pool = children[0::2]
        self.revoke_pool = children[1::2]
        self.chain_pool = chains
        return {
            "introspect_pool": len(self.introspect_pool),
            "revoke_pool": len(self.revoke_pool),
            "chain_pool": len(self.chain_pool),
            "errors": dict(errors),
        }

    async def prepare(self, phase: Phase) -> dict[str, Any]:
        """Build the phase's requests, open its channels, warm up (bounded in count and time)."""
        await self._close()
        built = time.perf_counter()
        self._requests = self._request_factory(phase)
        build_seconds = time.perf_counter() - built
        if phase.rpc in HTTP_PATHS:
            # HTTP/1.1 carries one call at a time per connection: as many keep-alive connections as
            # calls in flight (a gRPC channel multiplexes them).
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=phase.concurrency),
                timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT_SECONDS),
            )
        else:
            self._channels = await self._open(phase.address, 1 if phase.concurrency == 1 else phase.channels)
        self._phase = phase
        warm = await self._drive(
            self._calls(phase),
            self._requests,
            concurrency=phase.concurrency,
            max_calls=phase.warmup_calls,
            duration=phase.warmup,
            check=_checker(phase.rpc),
            first_index=phase.max_calls,
        )
        return {
            "warmup_calls": len(warm.latencies),
            "warmup_errors": dict(warm.errors),
            "build_s": build_seconds,
        }

    async def run(self) -> dict[str, Any]:
        """Run the prepared phase."""
        phase, requests = self._phase, self._requests
        if phase is None or requests is None:
            raise RuntimeError("run without prepare")
        outcome = await self._drive(
            self._calls(phase),
            requests,
            concurrency=phase.concurrency,
            max_calls=phase.max_calls,
            duration=phase.duration,
            check=_checker(phase.rpc),
        )
        await self._close()
        self._phase = self._requests = None
        return summarize(outcome)


def _cycle(items: Sequence[Any]) -> Callable[[int], Any]:
    if not items:
        raise RuntimeError("empty request pool: did setup run?")
    return lambda index: items[index % len(items)]


def _checker(rpc: str) -> Callable[[Any], str | None]:
    if rpc in ("Delegate", "DelegateWarm"):
        return lambda response: None if response.access_token else "no_token"
    if rpc in ("Introspect", "IntrospectWarm"):
        return lambda response: None if response.active else "unexpectedly_inactive"
    if rpc in HTTP_PATHS:
        return lambda response: (
            None if response[0] == 200 and b'"access_token"' in response[1] else (f"http_{response[0]}")
        )
    return lambda response: None


def percentile(ordered: Sequence[float], quantile: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0.0 when empty)."""
    if not ordered:
        return 0.0
    rank = max(1, min(len(ordered), int(-(-quantile * len(ordered) // 1))))
    return ordered[rank - 1]


def summarize(outcome: Outcome) -> dict[str, Any]:
    """rps, latency percentiles (ms), errors and the generator's CPU per call."""
    ordered = sorted(outcome.latencies)
    calls = len(ordered)
    return {
        "calls": calls,
        "elapsed_s": outcome.elapsed,
        "rps": calls / outcome.elapsed if outcome.elapsed > 0 else 0.0,
        "p50_ms": percentile(ordered, 0.50) * 1000,
        "p90_ms": percentile(ordered, 0.90) * 1000,
        "p99_ms": percentile(ordered, 0.99) * 1000,
        "max_ms": (ordered[-1] if ordered else 0.0) * 1000,
        "mean_ms": (sum(ordered) / calls if calls else 0.0) * 1000,
        "errors": sum(outcome.errors.values()),
        "error_kinds": dict(outcome.errors),
        "loadgen_cpu_ms_per_call": outcome.cpu * 1000 / calls if calls else 0.0,
        "stopped_by": outcome.stopped_by,
    }


def main(conn: Connection, upstream_key: str, signing_key: str, redis_url: str, operator_secret: str) -> None:
    """The process's entry point: serve the orchestrator's commands until ``stop`` (or a closed pipe)."""
    generator = LoadGenerator(Path(upstream_key), Path(signing_key), redis_url, operator_secret)
    loop = asyncio.new_event_loop()
    try:
        for _ in itertools.count():
            try:
                message: dict[str, Any] = conn.recv()
            except EOFError:
                break
            op = message["op"]
            try:
                if op == "stop":
                    conn.send({"ok": True})
                    break
                if op == "setup":
                    reply = loop.run_until_complete(generator.setup(message["address"], message["pool_size"]))
                elif op == "prepare":
                    reply = loop.run_until_complete(generator.prepare(Phase.from_dict(message["phase"])))
                elif op == "run":
                    reply = loop.run_until_complete(generator.run())
                else:
                    raise ValueError(f"unknown op {op!r}")
                conn.send({"ok": True, **reply})
            except Exception as error:  # reported to the orchestrator, which decides
                conn.send({"ok": False, "error": f"{type(error).__name__}: {error}"})
    finally:
        loop.run_until_complete(generator._close())
        loop.close()
