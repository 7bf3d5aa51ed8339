"""The composition root: the one place that builds clients and keys and wires adapters to use cases.

Nothing is built at import time; everything is built once, at start-up, from a :class:`Config`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import ssl
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.connection import Connection, parse_url
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection

from delegation_service.adapters import jwt_codec
from delegation_service.adapters.clock import SystemClock
from delegation_service.adapters.dpop import DpopVerifier
from delegation_service.adapters.dpop_replay import MemoryProofReplayCache, RedisProofReplayCache
from delegation_service.adapters.http_fetch import FetchLimits
from delegation_service.adapters.key_directory import KeyDirectory, KeyDirectoryError
from delegation_service.adapters.key_rotation import KeyRotator, KeySnapshot, RotatingSigner, RotatingVerifier
from delegation_service.adapters.keys import (
    KeySet,
    SigningKey,
    generate_signing_key,
    load_jwks_file,
    load_private_key_file,
)
from delegation_service.adapters.memory_registry import MemoryRegistry
from delegation_service.adapters.metered_registry import MeteredRegistry
from delegation_service.adapters.redis import RedisRegistry, check_persistence_at_startup
from delegation_service.adapters.remote_jwks import (
    KeySourceEvents,
    RemoteKeySource,
    RemoteSettings,
    SourceState,
    SourceStatus,
)
from delegation_service.adapters.store_guard import StoreGuard, guarded_connection_class
from delegation_service.adapters.upstream_dev import DevUpstreamIssuer
from delegation_service.adapters.verified_cache import CachingVerifier
from delegation_service.audit import AuditLog
from delegation_service.config import Config, ConfigError, is_loopback_listen
from delegation_service.config import TrustedIssuer as TrustedIssuerConfig
from delegation_service.domain.access import AccessMode
from delegation_service.domain.catalog import Catalog, CatalogError
from delegation_service.domain.dpop import ProofReplayCache, ProofWindow
from delegation_service.domain.policy import DelegationPolicy
from delegation_service.domain.ports import AuditSink, Clock, RevocationLog, TokenRegistry, TokenVerifier
from delegation_service.domain.tokens import LifetimePolicy
from delegation_service.revocation_feed import RevocationFeed
from delegation_service.service import DelegationService
from delegation_service.transport.auth import CallerGate, operator_secret_digest
from delegation_service.transport.authz import AccessGate
from delegation_service.transport.http import JWKS_PATH, AdminHttpServer, AdminSettings, metadata
from delegation_service.transport.metrics import JwksMetrics, MetricsInterceptor, ServiceMetrics
from delegation_service.transport.oauth.endpoints import OAuthSettings
from delegation_service.transport.oauth.protocol import OAuthServer
from delegation_service.transport.oauth.threads import OAuthHttpServer
from delegation_service.transport.server import RunningServer, ServerSettings, start_server
from delegation_service.transport.servicer import DELEGATE_PATH
from delegation_service.transport.tls import TlsFileError, TlsFiles, http_server_context, server_credentials

if TYPE_CHECKING:
    from delegation_service.tracing import Tracing
    from delegation_service.transport.oauth.granian_server import GranianOAuthServer

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class Application:
    """Everything the process runs, built from one configuration."""

    config: Config
    service: DelegationService
    access: CallerGate
    """Who may call what (:class:`AccessGate`)."""
    events: RevocationLog
    """The revocation log each server's feed follows (the service's own registry)."""
    clock: Clock = field(default_factory=SystemClock)
    metrics: ServiceMetrics = field(default_factory=lambda: ServiceMetrics(process_metrics=False))
    tls: grpc.ServerCredentials | None = None
    """The gRPC port's TLS (or mTLS) credentials; ``None`` serves plaintext."""
    key_sources: tuple[RemoteKeySource, ...] = ()
    """The remote trusted issuers' keys, refreshed in the background until :meth:`close`."""
    audit: AuditSink | None = None
    """The audit trail the use cases and the access gate write to (the OAuth port's refusals too)."""
    dpop: DpopVerifier | None = None
    """Checks DPoP proofs (RFC 9449) on the OAuth port, with its replay cache in the store."""
    rotator: KeyRotator | None = None
    """Our signing keys' rotation (``issuer.key_directory``), in the background until :meth:`close`."""
    tracing: Tracing | None = None
    """OpenTelemetry spans (``tracing.exporter``); ``None`` when off."""
    _not_ready: tuple[str, ...] = ()

    def not_ready_reasons(self) -> list[str]:
        """Why the server is not ready (empty when it is): the store, or an issuer without usable keys."""
        reasons = [] if self.service.ready() else ["the token store does not answer"]
        jwks = JwksMetrics(self.metrics)
        for source in self.key_sources:
            status = source.status()
            jwks.age(status.issuer, status.age_seconds)
            if not status.usable:
                reasons.append(f"trusted issuer {status.issuer} has no usable keys ({status.last_error})")
        return reasons

    def ready(self) -> bool:
        """Readiness (the health monitor's probe); says why in the log whenever the reasons change."""
        reasons = tuple(self.not_ready_reasons())
        if reasons != self._not_ready:
            self._not_ready = reasons
            if reasons:
                log.warning("not ready", extra={"event": "not_ready", "reasons": list(reasons)})
            else:
                log.info("ready", extra={"event": "ready"})
        return not reasons

    def close(self) -> None:
        """Stop the background work :func:`build` started (JWKS refreshers, the key rotator)."""
        for source in self.key_sources:
            source.stop()
        if self.rotator is not None:
            self.rotator.stop()
        if self.tracing is not None:
            self.tracing.shutdown()

    def serve(
        self, listen: str | None = None, reuse_port: bool = False, *, admin: bool = False
    ) -> RunningServer:
        """Start the gRPC server; with ``admin``, the HTTP ports too (``admin.listen``, ``oauth.listen``).

        The commands (`serve`, `dev`) ask for them; tests and benchmarks that run several servers in one
        process or on one host leave them off, so they never fight over their ports.
        """
        config = self.config
        running = self._serve_grpc(listen, reuse_port)
        # The OAuth port is served by every worker (SO_REUSEPORT, as gRPC); the admin port by the first.
        with_oauth = bool(config.oauth_listen) and (admin or reuse_port)
        if not with_oauth and not (admin and config.admin_listen):
            return running
        oauth = http = None
        try:
            oauth = self.oauth_server(reuse_port=reuse_port) if with_oauth else None
            if admin and config.admin_listen:
                http = AdminHttpServer(
                    AdminSettings(
                        listen=config.admin_listen,
                        issuer=config.issuer,
                        jwks=self.service.jwks,
                        public_url=config.admin_public_url,
                        jwks_max_age_seconds=config.jwks_max_age_seconds,
                        extra_metadata=oauth.metadata_members if oauth is not None else {},
                    ),
                    self.metrics.exposition_registry(),
                    ready=lambda: running.health.serving,
                )
        except (RuntimeError, ConfigError):
            if oauth is not None:
                oauth.stop()
            running.stop(0)
            raise
        fields = {f.name: getattr(running, f.name) for f in dataclasses.fields(running)}
        return RunningApplication(
            **fields,
            admin=http.start() if http is not None else None,
            oauth=oauth.start() if oauth is not None else None,
        )

    def oauth_server(self, listen: str | None = None, *, reuse_port: bool = False) -> OAuthServer:
        """The OAuth HTTP face (not started) on ``listen`` or ``oauth.listen``, on ``oauth.server``."""
        config = self.config
        if not isinstance(self.access, AccessGate):
            raise RuntimeError("the OAuth port needs the access gate")
        settings = OAuthSettings(
            listen or config.oauth_listen, config.oauth_public_url, reuse_port=reuse_port
        )
        # Its metadata names its own JWKS: a gateway that reaches only this port can verify children.
        documents = lambda base: metadata(config.issuer, base + JWKS_PATH, self.service.jwks())  # noqa: E731
        audit = self.audit if self.audit is not None else AuditLog()
        tls = self._oauth_tls()
        if config.oauth_server == "granian":
            server_class = _granian_server()
            cert, key = config.tls_cert_file, config.tls_key_file
            files = (cert, key) if tls is not None and cert is not None and key is not None else None
            return server_class(
                settings, self.service, self.access, self.dpop, documents, audit=audit, tls=files
            )
        return OAuthHttpServer(
            settings, self.service, self.access, self.dpop, documents, audit=audit, tls=tls
        )

    def _oauth_tls(self) -> ssl.SSLContext | None:
        """The OAuth port serves HTTPS with the gRPC port's certificate, when TLS is configured (for
        granian the files are checked here too, then granian reads them)."""
        files = _tls_files(self.config)
        return None if files is None else _read_tls(http_server_context, files)

    def _serve_grpc(self, listen: str | None, reuse_port: bool) -> RunningServer:
        config = self.config
        return start_server(
            self.service,
            RevocationFeed(self.events, self.clock, max_streams=config.max_streams),
            ServerSettings(
                listen=listen or config.listen,
                max_workers=config.max_workers,
                max_concurrent_rpcs=config.max_concurrent_rpcs,
                max_streams=config.max_streams,
                reflection=config.reflection,
                reuse_port=reuse_port,
                credentials=self.tls,
                handshake_timeout_seconds=config.handshake_timeout_seconds,
            ),
            self.access,
            outer_interceptors=[
                *(self.tracing.server_interceptors() if self.tracing is not None else ()),
                MetricsInterceptor(self.metrics),
            ],
            ready=self.ready,
            prove=self._grpc_proof if self.dpop is not None else None,
        )

    def _grpc_proof(self, proof: str, parent_token: str) -> str:
        """A DPoP proof sent with ``Delegate`` over gRPC: a POST to the method's path under the issuer
        name (gRPC is an HTTP/2 POST to that path; the issuer names the service to every caller)."""
        assert self.dpop is not None
        url = self.config.issuer.rstrip("/") + DELEGATE_PATH
        return self.dpop.verify(proof, method="POST", url=url, access_token=parent_token)


@dataclass
class RunningApplication(RunningServer):
    """The running gRPC server and the admin HTTP port beside it."""

    admin: AdminHttpServer | None = None
    oauth: OAuthServer | None = None

    def refuse_new_calls(self) -> None:
        """The OAuth port refuses new requests at the same moment as the gRPC port."""
        super().refuse_new_calls()
        if self.oauth is not None:
            self.oauth.rules.refuse_new_requests()

    def stop(self, grace: float, drain_seconds: float = 0.0) -> None:
        """Drain gRPC (readiness turns 503 with health), then close the HTTP ports."""
        super().stop(grace, drain_seconds)
        if self.oauth is not None:
            self.oauth.stop()
        if self.admin is not None:
            self.admin.stop()


def _granian_server() -> type[GranianOAuthServer]:
    """granian's server class, or a start-up error naming the extra that brings it."""
    try:
        from delegation_service.transport.oauth.granian_server import GranianOAuthServer  # noqa: PLC0415
    except ImportError as error:
        raise ConfigError(
            "oauth.server",
            f"granian is not installed ({error.msg}); install the fast-http extra: "
            "pip install 'delegation-service[fast-http]', or set oauth.server = \"threads\"",
        ) from None
    return GranianOAuthServer


def build(
    config: Config,
    *,
    keys: KeySet | None = None,
    registry: TokenRegistry | None = None,
    extra_trusted: Sequence[jwt_codec.TrustedIssuer] = (),
    catalog: Catalog | None = None,
    clock: Clock | None = None,
    open_operator_mode: bool = False,
    tracing: Tracing | None = None,
) -> Application:
    """Wire the application. Keyword arguments replace what the config would build (dev server, tests)."""
    clock = clock or SystemClock()
    tracing = tracing or build_tracing(config)
    metrics = ServiceMetrics()
    rotator = key_rotator(config) if keys is None and config.key_directory is not None else None
    snapshot = None if rotator is None else first_snapshot(rotator)
    keys = keys or (snapshot.key_set if snapshot is not None else signing_keys(config))
    catalog = catalog or _catalog(config)
    trusted = [*_trusted_issuers(config, JwksMetrics(metrics)), *extra_trusted]
    sources = tuple(t.source for t in trusted if isinstance(t.source, RemoteKeySource))

    def verifier_over(own_keys: KeySet) -> jwt_codec.JwtVerifier:
        return jwt_codec.JwtVerifier(
            own_issuer=config.issuer,
            own_keys=own_keys,
            trusted=trusted,
            leeway_seconds=config.leeway_seconds,
            clock=clock,
        )

    jwt_verifier: jwt_codec.JwtVerifier | RotatingVerifier
    signer: jwt_codec.JwtSigner | RotatingSigner
    if rotator is None or snapshot is None:
        jwt_verifier, signer = verifier_over(keys), jwt_codec.JwtSigner(keys)
    else:
        rotating_verifier, rotating_signer = RotatingVerifier(verifier_over, keys), RotatingSigner(snapshot)
        rotator.install = functools.partial(_install_keys, rotating_signer, rotating_verifier, metrics)
        jwt_verifier, signer = rotating_verifier, rotating_signer
    verifier: TokenVerifier = jwt_verifier
    if config.verified_cache_size > 0:
        verifier = CachingVerifier(
            verifier, clock, config.verified_cache_size, key_generation=lambda: jwt_verifier.key_generation
        )
    # One bounded first fetch each, then the background: an unreachable provider delays start-up by at
    # most its fetch timeout, and is retried (readiness says why) instead of failing the process.
    for source in sources:
        source.refresh()
        source.start()
    registry = registry or build_registry(config, clock)
    store = metered(registry, metrics)
    if tracing is not None:
        store = tracing.registry(store, "memory" if isinstance(registry, MemoryRegistry) else "redis")
    audit = AuditLog()
    service = DelegationService(
        issuer=config.issuer,
        verifier=verifier,
        signer=signer,
        # One registry, given to each use case as the narrow port it needs.
        tokens=store,
        revocations=store,
        chains=store,
        health=store,
        policy=DelegationPolicy(catalog, config.require_explicit_scopes, config.max_scopes),
        lifetimes=LifetimePolicy(config.default_lifetime_seconds, config.max_lifetime_seconds),
        clock=clock,
        max_parent_age_seconds=config.max_parent_age_seconds,
        audit=audit,
    )
    metrics.describe_keys(keys.active.kid, keys.active.alg, service.jwks())
    if rotator is not None:
        rotator.start()
    if (config.operator_scope or config.introspection_scope) and not trusted:
        raise ConfigError("access.operator_scope", "caller JWTs need at least one [[trusted_issuers]] table")
    access = AccessGate(
        audit=audit,
        mode=AccessMode(config.access_mode),
        operator_token_sha256=config.operator_token_sha256,
        operator_identities=config.operator_identities,
        introspection_identities=config.introspection_identities,
        caller_tokens=service,
        operator_scope=config.operator_scope,
        introspection_scope=config.introspection_scope,
        everyone_is_operator=open_operator_mode,
    )
    return Application(
        config,
        service,
        access,
        store,
        clock,
        metrics=metrics,
        tls=tls_credentials(config),
        key_sources=sources,
        audit=audit,
        dpop=DpopVerifier(
            dpop_replay_cache(config, clock),
            clock,
            ProofWindow(config.dpop_max_age_seconds, config.leeway_seconds),
        ),
        rotator=rotator,
        tracing=tracing,
    )


def dpop_replay_cache(config: Config, clock: Clock) -> ProofReplayCache:
    """Where DPoP proof ids are remembered: Redis, so a proof replayed to another process is refused
    too; in memory with the memory store (one process)."""
    if config.store == "memory":
        return MemoryProofReplayCache(clock)
    return RedisProofReplayCache(redis_client(config, store_guard(config)), config.redis_key_prefix)


def build_tracing(config: Config) -> Tracing | None:
    """The tracing ``tracing.exporter`` asks for; ``None`` (and nothing of OpenTelemetry loaded) when off."""
    if config.tracing_exporter == "none":
        return None
    try:
        from delegation_service import tracing  # noqa: PLC0415 (an optional extra, loaded only when on)
    except ImportError as error:
        raise ConfigError(
            "tracing.exporter",
            f"needs the tracing extra ({error.name} is missing): pip install 'delegation-service[tracing]'",
        ) from None
    return tracing.build_tracing(config)


def key_rotator(config: Config) -> KeyRotator:
    """The rotator of ``issuer.key_directory`` under the ``keys.*`` policy (not started)."""
    if config.key_directory is None:
        raise ConfigError("issuer.key_directory", "is not set")
    return KeyRotator(KeyDirectory(config.key_directory), config.rotation_policy(), config.signing_algorithm)


def first_snapshot(rotator: KeyRotator) -> KeySnapshot:
    """The keys at start-up: the directory read, and the first key created if it holds none."""
    try:
        return rotator.step()
    except KeyDirectoryError as error:
        raise ConfigError("issuer.key_directory", str(error)) from None


def _install_keys(
    signer: RotatingSigner, verifier: RotatingVerifier, metrics: ServiceMetrics, snapshot: KeySnapshot
) -> None:
    """Sign, verify and publish with a new snapshot of the rotating keys."""
    verifier.install(snapshot.key_set)
    signer.install(snapshot)
    metrics.describe_keys(snapshot.key_set.active.kid, snapshot.key_set.active.alg, signer.jwks())


def tls_credentials(config: Config) -> grpc.ServerCredentials | None:
    """The gRPC port's TLS credentials, read and checked once; ``None`` (and a warning) for plaintext."""
    files = _tls_files(config)
    if files is None:
        if not is_loopback_listen(config.listen):
            log.warning(
                "serving plaintext gRPC on a non-loopback address: set tls.cert_file and tls.key_file "
                "unless a proxy in front terminates TLS",
                extra={"event": "tls_off", "listen": config.listen},
            )
        return None
    return _read_tls(server_credentials, files)


def _tls_files(config: Config) -> TlsFiles | None:
    if config.tls_cert_file is None or config.tls_key_file is None:
        return None
    return TlsFiles(config.tls_cert_file, config.tls_key_file, config.tls_client_ca_file)


def _read_tls(read: Callable[[TlsFiles], T], files: TlsFiles) -> T:
    """``read`` over the ``tls.*`` files; a file it refuses is a :class:`ConfigError` naming its setting."""
    try:
        return read(files)
    except TlsFileError as error:
        raise ConfigError(f"tls.{error.file}", error.problem) from None


def metered(registry: TokenRegistry, metrics: ServiceMetrics) -> TokenRegistry:
    """``registry`` with its latency, errors and revocations counted in ``metrics``."""
    return MeteredRegistry(
        registry,
        latency=metrics.store_seconds,
        errors=metrics.store_errors,
        revocations=metrics.revocations,
    )


def retention_seconds(config: Config) -> int:
    """How long horizons and revocation events are kept: longer than any token they can cover.

    Events are kept as long as horizons, so the revocation stream still holds every revocation in
    force (a cold gateway's snapshot misses none).
    """
    return max(config.max_parent_age_seconds, config.max_lifetime_seconds) + config.leeway_seconds


def build_registry(config: Config, clock: Clock) -> TokenRegistry:
    """The token store the configuration names."""
    retention = retention_seconds(config)
    if config.store == "memory":
        return MemoryRegistry(clock, horizon_retention_seconds=retention, event_retention_seconds=retention)
    registry = RedisRegistry(
        redis_client(config, store_guard(config)),
        prefix=config.redis_key_prefix,
        leeway_seconds=config.leeway_seconds,
        horizon_retention_seconds=retention,
        event_retention_seconds=retention,
        cluster=config.redis_mode == "cluster",
        require_persistence=not config.redis_allow_unsafe_persistence,
        min_replicas_acked=config.redis_min_replicas_acked,
        replica_ack_timeout_ms=config.redis_replica_ack_timeout_ms,
    )
    # Refuses to start (UnsafePersistence) on a Redis that could lose or evict revocations.
    check_persistence_at_startup(registry, allow_unsafe=config.redis_allow_unsafe_persistence)
    return registry


def store_guard(config: Config) -> StoreGuard:
    """The circuit breakers in front of Redis (one per node), from the ``redis.breaker_*`` settings."""
    return StoreGuard(
        failures=config.redis_breaker_failures, cooldown_seconds=config.redis_breaker_cooldown_ms / 1000
    )


def redis_client(config: Config, guard: StoreGuard | None = None) -> redis.Redis | RedisCluster:
    """A redis-py client with short timeouts and one quick retry, so a call fits inside a deadline.

    redis-py's defaults retry with back-off for seconds; a token check must fail closed well before
    the caller's deadline instead. With ``guard``, every connection caps its waits by the caller's
    deadline and refuses at once while its node is known down (:mod:`.adapters.store_guard`).
    """
    timeout = config.redis_timeout_ms / 1000
    common: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(ExponentialBackoff(cap=0.05, base=0.01), retries=1),
        "health_check_interval": 10,
    }
    if config.redis_mode == "sentinel":
        hosts = sentinel_addresses(config.redis_url)
        if guard is not None:
            common["connection_class"] = guarded_connection_class(SentinelManagedConnection, guard)
        # Sentinel is untyped in older redis-py (typed in 8.2; the image's lock pins 8.1).
        sentinel = Sentinel(hosts, socket_timeout=timeout, socket_connect_timeout=timeout)  # type: ignore[no-untyped-call, unused-ignore]
        master: redis.Redis = sentinel.master_for(config.redis_sentinel_service, **common)  # type: ignore[no-untyped-call, unused-ignore]
        return master
    if guard is not None:
        # The class the URL's scheme calls for (TLS, unix socket), guarded.
        base = parse_url(config.redis_url).get("connection_class", Connection)  # type: ignore[no-untyped-call]
        common["connection_class"] = guarded_connection_class(base, guard)
    if config.redis_mode == "cluster":
        return RedisCluster.from_url(config.redis_url, **common)
    return redis.Redis.from_url(config.redis_url, **common)


def sentinel_addresses(url: str) -> list[tuple[str, int]]:
    """The Sentinels named by ``redis.url`` in sentinel mode: ``host:port[,host:port...]``, optionally
    behind ``redis+sentinel://``; raise :class:`ConfigError` for anything else."""
    hosts = []
    for entry in url.removeprefix("redis+sentinel://").rstrip("/").split(","):
        host, _, port = entry.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                "redis.url", f"in sentinel mode it lists the sentinels, host:port,...: {entry!r}"
            )
        hosts.append((host, int(port)))
    return hosts


def signing_keys(config: Config) -> KeySet:
    """The service's key set from ``issuer.signing_key_files`` (first active, others previous) and
    ``issuer.next_signing_key_files`` (next); raise :class:`ConfigError` naming the setting."""
    if not config.signing_key_files:
        raise ConfigError(
            "issuer.signing_key_files",
            "at least one private key file is required (or issuer.key_directory, for rotating keys)",
        )
    loaded = _load_keys("issuer.signing_key_files", config.signing_key_files, config.signing_algorithm)
    upcoming = _load_keys(
        "issuer.next_signing_key_files", config.next_signing_key_files, config.signing_algorithm
    )
    try:
        return KeySet(loaded[0], loaded[1:], upcoming)
    except ValueError as error:
        raise ConfigError("issuer.next_signing_key_files", str(error)) from None


def _load_keys(setting: str, paths: Sequence[Path], algorithm: str) -> list[SigningKey]:
    loaded = []
    for path in paths:
        try:
            loaded.append(load_private_key_file(path, algorithm))
        except (OSError, ValueError) as error:
            raise ConfigError(setting, f"{path}: {error}") from None
    return loaded


def _catalog(config: Config) -> Catalog:
    if config.catalog_file is None:
        raise ConfigError("catalog.file", "is required")
    return load_catalog(config.catalog_file)


def load_catalog(path: Path) -> Catalog:
    """Read and validate a catalog file."""
    try:
        return Catalog.from_mapping(tomllib.loads(path.read_text(encoding="utf-8")))
    except OSError as error:
        raise ConfigError("catalog.file", f"cannot read {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError("catalog.file", f"{path} is not valid TOML: {error}") from None
    except CatalogError as error:
        raise ConfigError(f"catalog.file ({error.setting})", error.problem) from None


def remote_key_source(entry: TrustedIssuerConfig, events: KeySourceEvents | None = None) -> RemoteKeySource:
    """The key source of a ``[[trusted_issuers]]`` table with ``jwks_uri`` or discovery (not started)."""
    return RemoteKeySource(
        RemoteSettings(
            issuer=entry.issuer,
            jwks_uri=entry.jwks_uri,
            algorithms=entry.rules.algorithms,
            ca_file=entry.ca_file,
            limits=FetchLimits(entry.fetch_timeout_seconds, entry.max_response_bytes),
            refresh_min_seconds=entry.refresh_min_seconds,
            refresh_max_seconds=entry.refresh_max_seconds,
            refresh_default_seconds=entry.refresh_default_seconds,
            max_stale_seconds=entry.max_stale_seconds,
            unknown_kid_interval_seconds=entry.unknown_kid_interval_seconds,
        ),
        events=events,
    )


def issuer_statuses(config: Config) -> list[SourceStatus]:
    """Each trusted issuer's key state after one fetch (``config check``); starts nothing."""
    statuses = []
    for entry in config.trusted_issuers:
        if entry.jwks_file is None:
            source = remote_key_source(entry)
            source.refresh()
            statuses.append(source.status())
            continue
        try:
            count = len(load_jwks_file(entry.jwks_file, entry.rules.algorithms))
            error, state = None, SourceState.READY
        except (OSError, ValueError) as problem:
            count, error, state = 0, str(problem), SourceState.NO_KEYS
        statuses.append(SourceStatus(entry.issuer, str(entry.jwks_file), state, count, None, error))
    return statuses


def _trusted_issuers(config: Config, events: KeySourceEvents) -> list[jwt_codec.TrustedIssuer]:
    trusted = []
    for index, entry in enumerate(config.trusted_issuers):
        keys = {}
        source = None
        if entry.jwks_file is None:
            source = remote_key_source(entry, events)
        else:
            try:
                keys = load_jwks_file(entry.jwks_file, entry.rules.algorithms)
            except (OSError, ValueError, json.JSONDecodeError) as error:
                raise ConfigError(
                    f"trusted_issuers[{index}].jwks_file", f"{entry.jwks_file}: {error}"
                ) from None
        trusted.append(jwt_codec.TrustedIssuer(entry.issuer, keys, entry.rules, source))
    return trusted


def ephemeral_keys(algorithm: str) -> KeySet:
    """A key set with one freshly generated key (dev server)."""
    return KeySet(generate_signing_key(algorithm))


def operator_token_sha256(secret: str) -> str:
    """The ``operators.token_sha256`` entry that admits an operator presenting ``secret``."""
    return operator_secret_digest(secret)


def build_with_demo_parent(
    config: Config,
    catalog_path: Path,
    *,
    subject: str,
    scopes: Sequence[str],
    client_id: str,
    lifetime_seconds: int,
) -> tuple[Application, str]:
    """``delegation-service dev``'s application, on an ephemeral key and the catalog at ``catalog_path``,
    trusting a stand-in upstream issuer (SPEC §7), and a parent token that issuer minted with these claims."""
    upstream = DevUpstreamIssuer()
    application = build(
        config,
        keys=ephemeral_keys(config.signing_algorithm),
        catalog=load_catalog(catalog_path),
        extra_trusted=[upstream.trusted_issuer()],
    )
    parent = upstream.mint(
        subject=subject, scopes=scopes, client_id=client_id, lifetime_seconds=lifetime_seconds
    )
    return application, parent
