"""One bench server process: the real service, the minimal floor, or a bare echo.

``python -m bench.server --kind KIND ...`` listens on a loopback port, writes the port it got to
``--ready-file`` once it serves, and runs until SIGTERM or SIGINT. The first three kinds use the same
gRPC server model as ``delegation-service serve`` (a sync ``grpc.server`` with a thread pool, the same
options and limits); only what runs inside a call differs.

* ``service``: the application built by the composition root exactly as ``serve`` builds it (config,
  Redis client, keys parsed once, interceptor, health, reflection, JSON logs at ``--log-level``), with a
  ``DevUpstreamIssuer`` whose key is passed in as the one trusted upstream issuer.
* ``minimal``: the floor. ``Delegate`` verifies the ES256 parent with PyJWT (key object parsed once),
  signs an ES256 child and makes one Redis round trip (one EVALSHA recording it); ``Introspect``
  verifies the token and makes one EVALSHA of a read-only script over the keys the service reads.
  No policy, no interceptor.
* ``echo``: a generic unary method that returns its request bytes.
* ``minimal-aio`` and ``echo-aio``: the same floor and echo on ``grpc.aio`` under uvloop, with
  ``redis.asyncio``: the asyncio server model, prototyped and measured beside the sync one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import jwt
import redis.asyncio
import uvloop
from google.protobuf import timestamp_pb2

from bench.common import (
    ECHO_METHOD,
    FLOOR_KEY_PREFIX,
    SERVICE_ISSUER,
    SERVICE_KEY_PREFIX,
    UPSTREAM_ISSUER,
)
from delegation.v1 import delegation_pb2, delegation_pb2_grpc
from delegation_service import logs
from delegation_service.adapters.keys import KeySet, SigningKey, load_private_key_file
from delegation_service.adapters.upstream_dev import DevUpstreamIssuer
from delegation_service.app import RunningApplication, build, load_catalog, redis_client
from delegation_service.config import Config
from delegation_service.dev import demo_catalog_path
from delegation_service.domain.tokens import root_chain_id
from delegation_service.transport.server import MAX_MESSAGE_BYTES, MAX_METADATA_BYTES
from devtools.redis_server import LOOPBACK

LEEWAY_SECONDS = 30
CHILD_LIFETIME_SECONDS = 900

# The floor's one round trip for Delegate: refuse a revoked chain, record root and child, index the child.
# KEYS: chain marker, members, root record, child record. ARGV: root id, root value, root exp, child id,
# child value, child exp.
FLOOR_RECORD_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('SET', KEYS[3], ARGV[2], 'NX', 'EXAT', ARGV[3])
redis.call('SET', KEYS[4], ARGV[5], 'EXAT', ARGV[6])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1], ARGV[6], ARGV[4])
redis.call('EXPIREAT', KEYS[2], ARGV[3])
return 1
"""

# The floor's Introspect reads what the service's check reads, in the service's key layout (the tokens
# it checks were recorded by the service's registry): the token's field of its chain's hash, both
# markers and three horizons. KEYS: chain hash, token marker, chain marker, horizons. ARGV: token id.
FLOOR_CHECK_SCRIPT = """#!lua flags=no-writes
local reply = {redis.call('HGET', KEYS[1], ARGV[1])}
reply[2] = redis.call('EXISTS', KEYS[2])
reply[3] = redis.call('EXISTS', KEYS[3])
for i = 4, #KEYS do
  reply[i] = redis.call('GET', KEYS[i])
end
return reply
"""


def server_options(reuse_port: bool) -> list[tuple[str, int]]:
    """The channel options ``transport.server.start_server`` uses."""
    return [
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_metadata_size", MAX_METADATA_BYTES),
        ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
        ("grpc.server_handshake_timeout_ms", int(Config.handshake_timeout_seconds * 1000)),
    ]


def _plain_server(args: argparse.Namespace) -> grpc.Server:
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=args.max_workers, thread_name_prefix="rpc"),
        maximum_concurrent_rpcs=args.max_concurrent_rpcs,
        options=server_options(args.reuse_port),
    )


def _timestamp(seconds: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds)


@dataclass(frozen=True)
class Plan:
    """One floor call's Redis round trip (``keys``, ``args``) and how to answer once it is done."""

    keys: list[str]
    args: list[Any]
    finish: Callable[[Any], Any]


class Floor:
    """The floor's work around its one Redis round trip: the cryptography and the messages. The sync and
    the asyncio servers share it, so that they differ only in their server model."""

    def __init__(self, upstream: SigningKey, signing: SigningKey) -> None:
        self._jwt = jwt.PyJWT()
        # Key objects, parsed once: PyJWT never sees a PEM here.
        self._upstream_key = upstream.public_key
        self._service_key = signing.public_key
        self._signing_key = signing.private_key
        self._headers = {"kid": signing.kid, "typ": "at+jwt"}

    def _decode(self, token: str, key: Any, issuer: str) -> dict[str, Any] | None:
        try:
            claims: dict[str, Any] = self._jwt.decode(
                token,
                key,
                algorithms=["ES256"],
                issuer=issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "sub", "jti"], "verify_aud": False},
            )
        except jwt.PyJWTError:
            return None
        return claims

    def delegate(self, request: delegation_pb2.DelegateRequest) -> Plan | None:
        """Verify the parent; the EVALSHA recording root and child; then sign the child
        (``finish`` returns ``None`` when the chain is revoked). ``None``: the parent does not verify."""
        parent = self._decode(request.parent_token, self._upstream_key, UPSTREAM_ISSUER)
        if parent is None:
            return None
        now = int(time.time())
        parent_id = str(parent["jti"])
        parent_exp = int(parent["exp"])
        chain_id = root_chain_id(UPSTREAM_ISSUER, parent_id)
        child_id = secrets.token_urlsafe(16)
        expires_at = min(now + CHILD_LIFETIME_SECONDS, parent_exp)
        scope = " ".join(request.scopes)
        subject = str(parent["sub"])
        tag = f"{FLOOR_KEY_PREFIX}:{{{chain_id}}}"

        def finish(recorded: Any) -> delegation_pb2.DelegateResponse | None:
            if int(recorded) != 1:
                return None
            claims = {
                "iss": SERVICE_ISSUER,
                "sub": subject,
                "aud": "warehouse",
                "client_id": request.client_id,
                "scope": scope,
                "iat": now,
                "nbf": now,
                "exp": expires_at,
                "jti": child_id,
                "act": {"sub": parent.get("client_id", "")},
                "bearer": parent.get("bearer", {"type": "Per"}),
                "parent_jti": parent_id,
                "chain_id": chain_id,
            }
            token = self._jwt.encode(claims, self._signing_key, algorithm="ES256", headers=self._headers)
            return delegation_pb2.DelegateResponse(
                access_token=token,
                token_type="Bearer",
                issued_token_type="urn:ietf:params:oauth:token-type:jwt",
                scopes=list(request.scopes),
                bearer=delegation_pb2.Bearer(type=delegation_pb2.BEARER_TYPE_PERSON, id=subject),
                expire_time=_timestamp(expires_at),
                token_id=child_id,
                chain_id=chain_id,
                client_id=request.client_id,
            )

        return Plan(
            keys=[f"{tag}:rc", f"{tag}:m", f"{tag}:t:{parent_id}", f"{tag}:t:{child_id}"],
            args=[
                parent_id,
                f'[1,"{parent.get("client_id", "")}","{parent.get("scope", "")}","{subject}"]',
                parent_exp,
                child_id,
                f'[2,"{request.client_id}","{scope}",{now - int(parent["iat"])},{expires_at - now}]',
                expires_at,
            ],
            finish=finish,
        )

    def introspect(self, request: delegation_pb2.IntrospectRequest) -> Plan | None:
        """Verify the token; the read-only EVALSHA over its record, markers and horizons; then answer.
        ``None``: the token does not verify (inactive without a round trip)."""
        claims = self._decode(request.token, self._service_key, SERVICE_ISSUER)
        if claims is None:
            return None
        chain_id, token_id = str(claims["chain_id"]), str(claims["jti"])
        subject, client_id = str(claims["sub"]), str(claims.get("client_id", ""))
        actor = str(claims.get("act", {}).get("sub", ""))
        tag = f"{SERVICE_KEY_PREFIX}:{{{chain_id}}}"

        def finish(values: Any) -> delegation_pb2.IntrospectResponse:
            if values[0] is None or int(values[1]) or int(values[2]):
                return delegation_pb2.IntrospectResponse(active=False)
            aud = claims.get("aud", [])
            return delegation_pb2.IntrospectResponse(
                active=True,
                scopes=str(claims.get("scope", "")).split(),
                client_id=client_id,
                subject=subject,
                issuer=SERVICE_ISSUER,
                audiences=[aud] if isinstance(aud, str) else list(aud),
                issue_time=_timestamp(int(claims["iat"])),
                expire_time=_timestamp(int(claims["exp"])),
                token_id=token_id,
                chain_id=chain_id,
                parent_token_id=str(claims.get("parent_jti", "")),
                bearer=delegation_pb2.Bearer(type=delegation_pb2.BEARER_TYPE_PERSON, id=subject),
                actor_client_id=actor,
                kind=delegation_pb2.TOKEN_KIND_DELEGATED,
            )

        return Plan(
            keys=[
                tag,
                f"{tag}:rt:{token_id}",
                f"{tag}:rc",
                f"{SERVICE_KEY_PREFIX}:h:s:{subject}",
                f"{SERVICE_KEY_PREFIX}:h:c:{client_id}",
                f"{SERVICE_KEY_PREFIX}:h:c:{actor}",
            ],
            args=[token_id],
            finish=finish,
        )


class MinimalServicer(delegation_pb2_grpc.DelegationServiceServicer):
    """The floor on the sync server: only the cryptography and one Redis round trip per call (other
    RPCs: UNIMPLEMENTED)."""

    def __init__(self, redis_client: Any, floor: Floor) -> None:
        self._record = redis_client.register_script(FLOOR_RECORD_SCRIPT)
        self._check = redis_client.register_script(FLOOR_CHECK_SCRIPT)
        self._floor = floor

    def Delegate(  # noqa: N802 - the RPC's name
        self, request: delegation_pb2.DelegateRequest, context: grpc.ServicerContext
    ) -> delegation_pb2.DelegateResponse:
        """Verify the parent, record the child in one EVALSHA, sign it."""
        plan = self._floor.delegate(request)
        if plan is None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "the parent token does not verify")
        response: delegation_pb2.DelegateResponse | None = plan.finish(
            self._record(keys=plan.keys, args=plan.args)
        )
        if response is None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "the chain is revoked")
        return response

    def Introspect(  # noqa: N802 - the RPC's name
        self, request: delegation_pb2.IntrospectRequest, context: grpc.ServicerContext
    ) -> delegation_pb2.IntrospectResponse:
        """Verify the token, read its record, markers and horizons in one EVALSHA (a read-only script)."""
        plan = self._floor.introspect(request)
        if plan is None:
            return delegation_pb2.IntrospectResponse(active=False)
        response: delegation_pb2.IntrospectResponse = plan.finish(self._check(keys=plan.keys, args=plan.args))
        return response


class AioMinimalServicer(delegation_pb2_grpc.DelegationServiceServicer):
    """The same floor on ``grpc.aio`` (uvloop's event loop when installed) with ``redis.asyncio``: the
    prototype of an asyncio server model, measured beside the sync one."""

    def __init__(self, redis_client: Any, floor: Floor) -> None:
        self._record = redis_client.register_script(FLOOR_RECORD_SCRIPT)
        self._check = redis_client.register_script(FLOOR_CHECK_SCRIPT)
        self._floor = floor

    async def Delegate(  # noqa: N802 - the RPC's name
        self, request: delegation_pb2.DelegateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> delegation_pb2.DelegateResponse:
        """Verify the parent, record the child in one EVALSHA, sign it."""
        plan = self._floor.delegate(request)
        if plan is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "the parent token does not verify")
        response: delegation_pb2.DelegateResponse | None = plan.finish(
            await self._record(keys=plan.keys, args=plan.args)
        )
        if response is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "the chain is revoked")
        return response

    async def Introspect(  # noqa: N802 - the RPC's name
        self, request: delegation_pb2.IntrospectRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> delegation_pb2.IntrospectResponse:
        """Verify the token, read its record, markers and horizons in one EVALSHA (a read-only script)."""
        plan = self._floor.introspect(request)
        if plan is None:
            return delegation_pb2.IntrospectResponse(active=False)
        response: delegation_pb2.IntrospectResponse = plan.finish(
            await self._check(keys=plan.keys, args=plan.args)
        )
        return response


def _echo(request: bytes, context: grpc.ServicerContext) -> bytes:
    return request


def _build_service(args: argparse.Namespace) -> tuple[Any, Any]:
    """The real application, built as ``serve`` builds it; returns (running server, stop callable)."""
    config = Config(
        listen=f"{LOOPBACK}:{args.port}",
        issuer=SERVICE_ISSUER,
        store="redis",
        redis_url=args.redis_url,
        redis_key_prefix=args.key_prefix,
        operator_token_sha256=(args.operator_sha256,),
        max_workers=args.max_workers,
        max_concurrent_rpcs=args.max_concurrent_rpcs,
        log_level=args.log_level,
        # The bench's Redis keeps nothing on disk (a throw-away server); production refuses that.
        redis_allow_unsafe_persistence=True,
        # Introspection open to any caller (loopback only), as on the dev server: the bench measures
        # the token work, not caller authentication.
        access_mode="open",
        **_oauth_settings(args),
    ).validate()
    logs.configure(config.log_level)
    upstream = DevUpstreamIssuer(UPSTREAM_ISSUER, key=load_private_key_file(args.upstream_key, "ES256"))
    app = build(
        config,
        keys=KeySet(load_private_key_file(args.signing_key, "ES256")),
        catalog=load_catalog(demo_catalog_path()),
        extra_trusted=[upstream.trusted_issuer()],
    )
    running = app.serve(reuse_port=args.reuse_port, admin=args.kind == "service-http")
    if isinstance(running, RunningApplication) and running.oauth is not None:
        return running.oauth.port, lambda: running.stop(1.0)
    return running.port, lambda: running.stop(1.0)


def _oauth_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The OAuth port of the ``service-http`` kind (no admin port: nothing else listens)."""
    if args.kind != "service-http":
        return {}
    settings: dict[str, Any] = {"oauth_listen": f"{LOOPBACK}:0", "admin_listen": ""}
    if args.oauth_server != "threads":
        settings["oauth_server"] = args.oauth_server
    return settings


def _build_plain(args: argparse.Namespace) -> tuple[Any, Any]:
    server = _plain_server(args)
    if args.kind == "echo":
        handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(_echo)
        service, method = ECHO_METHOD.strip("/").split("/")
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {method: handler}),))
    else:
        client = redis_client(Config(redis_url=args.redis_url))
        servicer = MinimalServicer(client, _floor(args))  # type: ignore[abstract]  # others: UNIMPLEMENTED
        delegation_pb2_grpc.add_DelegationServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port(f"{LOOPBACK}:{args.port}")
    if port == 0:
        raise RuntimeError(f"cannot listen on {LOOPBACK}:{args.port}")
    server.start()
    return port, lambda: server.stop(1.0).wait()


def _floor(args: argparse.Namespace) -> Floor:
    return Floor(
        load_private_key_file(args.upstream_key, "ES256"), load_private_key_file(args.signing_key, "ES256")
    )


async def _serve_aio(args: argparse.Namespace, ready: Callable[[int], None]) -> None:
    """The ``*-aio`` kinds: the echo or the floor on ``grpc.aio``, until SIGTERM/SIGINT."""
    server = grpc.aio.server(
        maximum_concurrent_rpcs=args.max_concurrent_rpcs, options=server_options(args.reuse_port)
    )
    client: Any = None
    if args.kind == "echo-aio":
        handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(_aio_echo)
        service, method = ECHO_METHOD.strip("/").split("/")
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {method: handler}),))
    else:
        client = redis.asyncio.Redis.from_url(args.redis_url)
        servicer = AioMinimalServicer(client, _floor(args))  # type: ignore[abstract]  # others: UNIMPLEMENTED
        delegation_pb2_grpc.add_DelegationServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port(f"{LOOPBACK}:{args.port}")
    if port == 0:
        raise RuntimeError(f"cannot listen on {LOOPBACK}:{args.port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    ready(port)
    await stop.wait()
    await server.stop(1.0)
    if client is not None:
        await client.aclose()


async def _aio_echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m bench.server", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--kind",
        choices=("service", "service-http", "minimal", "echo", "minimal-aio", "echo-aio"),
        required=True,
        help="service-http: the service, its OAuth port the one written to --ready-file",
    )
    parser.add_argument("--oauth-server", default="threads", help="oauth.server of the service-http kind")
    parser.add_argument("--port", type=int, default=0, help="loopback port (0: any free one)")
    parser.add_argument("--ready-file", type=Path, required=True, help="the bound port is written here")
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--upstream-key", type=Path, help="PEM of the dev upstream issuer's key")
    parser.add_argument("--signing-key", type=Path, help="PEM of the service's signing key")
    parser.add_argument("--operator-sha256", default="0" * 64)
    parser.add_argument("--max-workers", type=int, default=Config.max_workers)
    parser.add_argument("--max-concurrent-rpcs", type=int, default=Config.max_concurrent_rpcs)
    parser.add_argument(
        "--reuse-port", action="store_true", help="SO_REUSEPORT (several processes, one port)"
    )
    parser.add_argument("--log-level", default="INFO", help="service log level (JSON lines to stdout)")
    parser.add_argument("--key-prefix", default=SERVICE_KEY_PREFIX, help="Redis key prefix of the service")
    args = parser.parse_args(argv)

    def ready(port: int) -> None:
        partial = args.ready_file.with_suffix(".tmp")
        partial.write_text(f"{port} {os.getpid()}\n")
        partial.replace(args.ready_file)

    if args.kind.endswith("-aio"):
        uvloop.run(_serve_aio(args, ready))  # the fastest asyncio loop on Linux
        return 0
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    port, shutdown = _build_service(args) if args.kind.startswith("service") else _build_plain(args)
    ready(port)
    while not stop.wait(1.0):
        pass
    shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
