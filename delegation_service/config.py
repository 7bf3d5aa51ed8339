"""Configuration: one settings model, read from a TOML file and overridden by environment variables.

Every setting is declared once, below, with its TOML path, default and help text; the loader, the
environment overrides (``DELEGATION_<SECTION>_<KEY>``) and the README's reference table
(``delegation-service config-reference``) are all derived from that declaration, so they cannot drift.
Bad configuration fails at start-up with a :class:`ConfigError` naming the setting.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import tomllib
import types
import typing
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from delegation_service.adapters.http_fetch import check_fetch_url
from delegation_service.adapters.jwt_codec import DEFAULT_RULES, IssuerRules
from delegation_service.adapters.keys import (
    ASYMMETRIC_ALGORITHMS,
    DEFAULT_UPSTREAM_ALGORITHMS,
    SIGNING_ALGORITHMS,
)
from delegation_service.adapters.remote_jwks import RemoteSettings
from delegation_service.adapters.upstream_claims import (
    DEFAULT_BEARER_CLAIM,
    DEFAULT_CLIENT_CLAIMS,
    ClaimMapping,
    ClaimMappingError,
    ScopeFormat,
    parse_fixed_bearer,
)
from delegation_service.domain.rotation import RotationPolicy
from delegation_service.domain.scopes import BearerType

REDIS_MODES = ("standalone", "sentinel", "cluster")
STORES = ("redis", "memory")
ACCESS_MODES = ("authenticated", "open")
MAX_STREAMS_LIMIT = 10_000
"""A ceiling on ``server.max_streams``: each open stream holds a (sleeping) thread of its own."""
MAX_SCOPES_LIMIT = 1000
"""A ceiling on ``tokens.max_scopes``: checking a scope costs a regex and a few lookups, and the count
bounds that work per request."""
ENV_PREFIX = "DELEGATION_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
TRACING_EXPORTERS = ("none", "otlp", "console")
OAUTH_SERVERS = ("threads", "granian")


class ConfigError(ValueError):
    """Raised when a setting is missing, malformed or inconsistent; ``setting`` names it."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"setting {setting!r}: {problem}")
        self.setting = setting
        self.problem = problem


def _setting(path: str, default: Any, help: str) -> Any:
    return field(default=default, metadata={"path": path, "help": help})


_REMOTE = RemoteSettings("")  # its defaults are a table's: one home


@dataclass(frozen=True)
class TrustedIssuer:
    """An upstream issuer whose tokens may be parents (one ``[[trusted_issuers]]`` table): its rules, and
    where its keys are read or fetched from (the verifier's ``TrustedIssuer`` holds the keys)."""

    issuer: str
    jwks_file: Path | None = None
    """Keys from a file; else from ``jwks_uri``; else from the issuer's OpenID Connect discovery."""
    jwks_uri: str | None = None
    rules: IssuerRules = DEFAULT_RULES
    ca_file: Path | None = None
    """CA certificates (PEM) for the provider's HTTPS; default: the system trust store."""
    refresh_min_seconds: float = _REMOTE.refresh_min_seconds
    refresh_max_seconds: float = _REMOTE.refresh_max_seconds
    refresh_default_seconds: float = _REMOTE.refresh_default_seconds
    max_stale_seconds: float = _REMOTE.max_stale_seconds
    unknown_kid_interval_seconds: float = _REMOTE.unknown_kid_interval_seconds
    fetch_timeout_seconds: float = _REMOTE.limits.timeout_seconds
    max_response_bytes: int = _REMOTE.limits.max_bytes

    @property
    def remote(self) -> bool:
        """Whether the keys are fetched over HTTP(S) (by ``jwks_uri`` or discovery)."""
        return self.jwks_file is None


_REMOTE_NUMBERS: tuple[tuple[str, type], ...] = (
    ("refresh_min_seconds", float),
    ("refresh_max_seconds", float),
    ("refresh_default_seconds", float),
    ("max_stale_seconds", float),
    ("unknown_kid_interval_seconds", float),
    ("fetch_timeout_seconds", float),
    ("max_response_bytes", int),
)


def _defaults(settings: type, names: Collection[str]) -> str:
    """``name (default), ...`` of a settings class's fields, for help text that shows the defaults."""
    defaults = {item.name: item.default for item in dataclasses.fields(settings)}
    return ", ".join(
        f"{name} ({int(value) if isinstance(value, float) and value.is_integer() else value})"
        for name in names
        if isinstance(value := defaults[name], int | float)
    )


@dataclass(frozen=True)
class Config:
    """Every setting of the service. Paths are resolved against the config file's folder."""

    listen: str = _setting("server.listen", "127.0.0.1:50051", "gRPC listen address, host:port.")
    max_workers: int = _setting("server.max_workers", 8, "Threads serving RPCs in one process.")
    max_concurrent_rpcs: int = _setting(
        "server.max_concurrent_rpcs",
        256,
        "RPCs in flight (beside open streams) before new ones get RESOURCE_EXHAUSTED at once.",
    )
    max_streams: int = _setting(
        "server.max_streams",
        1000,
        "Open WatchRevocations streams per process; past it a new one gets RESOURCE_EXHAUSTED. Streams"
        " have their own threads, so they never take the workers unary calls need.",
    )
    reflection: bool = _setting("server.reflection", True, "Serve gRPC server reflection.")
    drain_seconds: float = _setting(
        "server.drain_seconds",
        2.0,
        "On SIGTERM, how long health reports NOT_SERVING while calls are still served (load balancers "
        "stop sending); after it, new calls get UNAVAILABLE.",
    )
    grace_seconds: float = _setting(
        "server.grace_seconds",
        10.0,
        "After the drain period, how long calls in flight may take to finish before they are cancelled.",
    )
    log_level: str = _setting("server.log_level", "INFO", "Log level: DEBUG, INFO, WARNING or ERROR.")
    handshake_timeout_seconds: float = _setting(
        "server.handshake_timeout_seconds",
        5.0,
        "A connection that has not finished its TLS and HTTP/2 handshake by then is dropped.",
    )

    worker_restart_backoff_seconds: float = _setting(
        "workers.restart_backoff_seconds",
        0.5,
        "serve --workers: delay before restarting a crashed worker; doubles with each recent crash.",
    )
    worker_restart_backoff_max_seconds: float = _setting(
        "workers.restart_backoff_max_seconds", 15.0, "The longest delay before restarting a crashed worker."
    )
    worker_crash_loop_crashes: int = _setting(
        "workers.crash_loop_crashes",
        5,
        "A worker that crashes more often than this within crash_loop_window_seconds is not restarted: "
        "the supervisor stops and exits 1.",
    )
    worker_crash_loop_window_seconds: float = _setting(
        "workers.crash_loop_window_seconds", 60.0, "The window over which a worker's crashes are counted."
    )

    tls_cert_file: Path | None = _setting(
        "tls.cert_file", None, "PEM certificate chain of the gRPC port; with key_file, turns TLS on."
    )
    tls_key_file: Path | None = _setting("tls.key_file", None, "PEM private key of tls.cert_file.")
    tls_client_ca_file: Path | None = _setting(
        "tls.client_ca_file",
        None,
        "PEM CA(s) for client certificates; when set, every client must present one (mTLS).",
    )

    issuer: str = _setting("issuer.name", "", "The `iss` of child tokens (required).")
    signing_key_files: tuple[Path, ...] = _setting(
        "issuer.signing_key_files", (), "PEM private keys; the first signs, the others still verify."
    )
    signing_algorithm: str = _setting(
        "issuer.signing_algorithm",
        "ES256",
        f"{', '.join(SIGNING_ALGORITHMS[:-1])} or {SIGNING_ALGORITHMS[-1]}.",
    )
    next_signing_key_files: tuple[Path, ...] = _setting(
        "issuer.next_signing_key_files",
        (),
        "PEM private keys published in the JWKS but not signing yet (the next rotation).",
    )
    key_directory: Path | None = _setting(
        "issuer.key_directory",
        None,
        "Directory of automatically rotated signing keys, shared by every process of the issuer (created"
        ' 0700 if missing); instead of signing_key_files. See "Key rotation".',
    )
    rotation_interval_seconds: float = _setting(
        "keys.rotation_interval_seconds",
        2_592_000.0,
        "With issuer.key_directory: how long each key signs before the next one takes over (30 days).",
    )
    publish_ahead_seconds: float = _setting(
        "keys.publish_ahead_seconds",
        86_400.0,
        "With issuer.key_directory: how long a new key is in the JWKS before it signs; more than"
        " admin.jwks_max_age_seconds and any clock skew between hosts.",
    )

    default_lifetime_seconds: int = _setting(
        "tokens.default_lifetime_seconds", 900, "Child lifetime when the request names none."
    )
    max_lifetime_seconds: int = _setting("tokens.max_lifetime_seconds", 3600, "Longest child lifetime.")
    leeway_seconds: int = _setting("tokens.leeway_seconds", 30, "Clock leeway for exp/nbf/iat (at most 300).")
    require_explicit_scopes: bool = _setting(
        "tokens.require_explicit_scopes", False, "Refuse requests without scopes instead of granting all."
    )
    max_scopes: int = _setting("tokens.max_scopes", 100, "Most scopes one request may name.")
    max_parent_age_seconds: int = _setting(
        "tokens.max_parent_age_seconds",
        86400,
        "Longest upstream token life; subject/client horizons last this long.",
    )
    verified_cache_size: int = _setting(
        "tokens.verified_cache_size",
        10000,
        "Verified tokens kept per process (by hash, until exp; revocation is still checked); 0 = off.",
    )

    catalog_file: Path | None = _setting("catalog.file", None, "The scope catalog (TOML) (required).")
    trusted_issuers: tuple[TrustedIssuer, ...] = _setting(
        "trusted_issuers",
        (),
        "`[[trusted_issuers]]` tables: issuer, then jwks_file, or jwks_uri, or neither (OpenID Connect"
        " discovery); audience, algorithms, allow_extra_audiences, actor_claim, allow_high_s; a claims table"
        " (scopes, scopes_format, client, bearer_claim, bearer_id_claim, bearer_type, bearer,"
        ' client_bearers: see "Claims of your identity provider"); for remote'
        f" keys ca_file, {_defaults(TrustedIssuer, [name for name, _ in _REMOTE_NUMBERS])}."
        ' See "Trusting your identity provider".',
    )

    store: str = _setting("store.backend", "redis", "Token store: redis, or memory (one process, dev only).")
    redis_url: str = _setting(
        "redis.url",
        "redis://127.0.0.1:6379/0",
        "Redis URL (rediss:// for TLS); a cluster node's URL; in sentinel mode the sentinels, host:port,...",
    )
    redis_mode: str = _setting("redis.mode", "standalone", "standalone, sentinel or cluster.")
    redis_sentinel_service: str = _setting("redis.sentinel_service", "mymaster", "Sentinel master name.")
    redis_timeout_ms: int = _setting(
        "redis.timeout_ms", 250, "Socket connect and read timeout per Redis call."
    )
    redis_breaker_failures: int = _setting(
        "redis.breaker_failures",
        3,
        "Consecutive Redis timeouts or connection errors after which calls fail fast (UNAVAILABLE).",
    )
    redis_breaker_cooldown_ms: int = _setting(
        "redis.breaker_cooldown_ms",
        500,
        "While calls fail fast, how long until one probe command is let through to Redis.",
    )
    redis_min_replicas_acked: int = _setting(
        "redis.min_replicas_acked",
        0,
        "Replicas that must confirm a revocation (WAIT) before it is acknowledged; 0 = off.",
    )
    redis_replica_ack_timeout_ms: int = _setting(
        "redis.replica_ack_timeout_ms",
        100,
        "Longest WAIT for those replicas (less than redis.timeout_ms); fewer: UNAVAILABLE.",
    )
    redis_key_prefix: str = _setting("redis.key_prefix", "ds", "Prefix of every key the service writes.")
    redis_allow_unsafe_persistence: bool = _setting(
        "redis.allow_unsafe_persistence",
        False,
        "Development only: serve although Redis lacks appendonly yes / maxmemory-policy noeviction "
        "(or hides CONFIG); a restart or eviction can then undo revocations.",
    )

    admin_listen: str = _setting(
        "admin.listen",
        "127.0.0.1:8080",
        "Admin HTTP address, host:port (/metrics, JWKS, metadata, /livez, /readyz); empty turns it off.",
    )
    admin_public_url: str = _setting(
        "admin.public_url",
        "",
        "Base URL gateways fetch the JWKS from (jwks_uri); default http://<admin.listen>, "
        "or issuer.name when listening on a wildcard address.",
    )
    jwks_max_age_seconds: int = _setting(
        "admin.jwks_max_age_seconds", 300, "Cache-Control max-age of the JWKS and metadata documents."
    )

    oauth_listen: str = _setting(
        "oauth.listen",
        "",
        "OAuth HTTP address, host:port (RFC 8693 token exchange, RFC 7662 introspection, RFC 7009 "
        "revocation under /oauth2/, and the RFC 8414 metadata); a port of its own, so a gateway can reach "
        "it without reaching /metrics; empty (the default) turns it off.",
    )
    oauth_public_url: str = _setting(
        "oauth.public_url",
        "",
        "Base URL callers reach the OAuth port at (endpoints in the metadata, and the htu DPoP proofs "
        "must name); default http://<oauth.listen>.",
    )
    oauth_server: str = _setting(
        "oauth.server",
        "threads",
        "The OAuth port's HTTP server: threads (the standard library's, a thread per connection) or "
        "granian (a native core: less CPU per call under load; the fast-http extra: pip install "
        "'delegation-service[fast-http]'; no client certificates, so not with tls.client_ca_file).",
    )
    dpop_max_age_seconds: int = _setting(
        "oauth.dpop_max_age_seconds",
        60,
        "How old a DPoP proof's iat may be (RFC 9449); its jti is remembered (Redis) that long.",
    )

    operator_token_sha256: tuple[str, ...] = _setting(
        "operators.token_sha256", (), "SHA-256 (hex) of operator bearer secrets for the admin service."
    )

    access_mode: str = _setting(
        "access.mode",
        "authenticated",
        "authenticated, or open: anyone may introspect (loopback listen address only; dev).",
    )
    operator_identities: tuple[str, ...] = _setting(
        "access.operator_identities", (), "Client certificate subject CNs or SANs of operators (mTLS)."
    )
    introspection_identities: tuple[str, ...] = _setting(
        "access.introspection_identities",
        (),
        "Client certificate CNs or SANs that may call Introspect and WatchRevocations (mTLS).",
    )
    operator_scope: str = _setting(
        "access.operator_scope", "", "Scope that makes a trusted issuer's bearer JWT an operator."
    )
    introspection_scope: str = _setting(
        "access.introspection_scope",
        "",
        "Scope that lets a trusted issuer's bearer JWT introspect and follow revocations.",
    )

    tracing_exporter: str = _setting(
        "tracing.exporter",
        "none",
        "OpenTelemetry spans of every RPC and token-store call: none (off), otlp (OTLP/gRPC to"
        " $OTEL_EXPORTER_OTLP_ENDPOINT, default localhost:4317) or console (stdout). Needs the tracing"
        " extra: pip install 'delegation-service[tracing]'.",
    )
    tracing_service_name: str = _setting(
        "tracing.service_name", "delegation-service", "The spans' service.name resource attribute."
    )
    tracing_sample_ratio: float = _setting(
        "tracing.sample_ratio",
        1.0,
        "Share of new traces recorded (0 to 1); a call that arrives with a traceparent follows its caller's"
        " decision.",
    )

    def validate(self) -> Config:
        """Check cross-setting rules; return ``self`` so loading reads as one expression."""
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ConfigError("server.listen", f"{self.listen!r} is not host:port")
        if self.admin_listen:
            admin_host, _, admin_port = self.admin_listen.rpartition(":")
            if not admin_host or not admin_port.isdigit() or not 0 <= int(admin_port) < 65536:
                raise ConfigError("admin.listen", f"{self.admin_listen!r} is not host:port")
        if self.oauth_listen:
            oauth_host, _, oauth_port = self.oauth_listen.rpartition(":")
            if not oauth_host or not oauth_port.isdigit() or not 0 <= int(oauth_port) < 65536:
                raise ConfigError("oauth.listen", f"{self.oauth_listen!r} is not host:port")
        if self.oauth_public_url and not self.oauth_public_url.startswith(("https://", "http://")):
            raise ConfigError("oauth.public_url", "must be an http(s) URL")
        self._validate_oauth_server()
        if not 1 <= self.dpop_max_age_seconds <= 3600:
            raise ConfigError("oauth.dpop_max_age_seconds", "must be between 1 and 3600")
        if self.jwks_max_age_seconds < 0:
            raise ConfigError("admin.jwks_max_age_seconds", "must not be negative")
        if self.log_level.upper() not in LOG_LEVELS:
            raise ConfigError("server.log_level", f"must be one of {', '.join(LOG_LEVELS)}")
        if not self.issuer:
            raise ConfigError("issuer.name", "is required")
        if self.signing_algorithm not in SIGNING_ALGORITHMS:
            raise ConfigError("issuer.signing_algorithm", f"must be one of {', '.join(SIGNING_ALGORITHMS)}")
        if not 0 < self.default_lifetime_seconds <= self.max_lifetime_seconds:
            raise ConfigError(
                "tokens.default_lifetime_seconds", "must be positive and <= max_lifetime_seconds"
            )
        if not 0 <= self.leeway_seconds <= 300:
            raise ConfigError("tokens.leeway_seconds", "must be between 0 and 300")
        if self.verified_cache_size < 0:
            raise ConfigError("tokens.verified_cache_size", "must be 0 (off) or positive")
        if self.store not in STORES:
            raise ConfigError("store.backend", f"must be one of {', '.join(STORES)}")
        if self.redis_mode not in REDIS_MODES:
            raise ConfigError("redis.mode", f"must be one of {', '.join(REDIS_MODES)}")
        if self.redis_timeout_ms <= 0:
            raise ConfigError("redis.timeout_ms", "must be positive")
        self._validate_redis_reliability()
        for digest in self.operator_token_sha256:
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ConfigError("operators.token_sha256", "entries must be 64 lower-case hex digits")
        for index, trusted in enumerate(self.trusted_issuers):
            if trusted.issuer == self.issuer:
                raise ConfigError(f"trusted_issuers[{index}].issuer", "must differ from issuer.name")
        self._validate_security()
        self._validate_lifecycle()
        self._validate_rotation()
        if self.tracing_exporter not in TRACING_EXPORTERS:
            raise ConfigError("tracing.exporter", f"must be one of {', '.join(TRACING_EXPORTERS)}")
        if not 0 <= self.tracing_sample_ratio <= 1:
            raise ConfigError("tracing.sample_ratio", "must be between 0 and 1")
        return self

    def _validate_oauth_server(self) -> None:
        if self.oauth_server not in OAUTH_SERVERS:
            raise ConfigError("oauth.server", f"must be one of {', '.join(OAUTH_SERVERS)}")
        if self.oauth_server == "granian" and self.oauth_listen and self.tls_client_ca_file is not None:
            # Certificate-bound children (RFC 8705) and certificate identities need the client
            # certificate, which granian does not pass to the application.
            raise ConfigError(
                "oauth.server",
                "granian cannot serve the OAuth port with client certificates (tls.client_ca_file): it "
                "does not give the application the certificate, so certificate-bound children and "
                'certificate identities would silently stop working; use oauth.server = "threads"',
            )

    def rotation_policy(self) -> RotationPolicy:
        """The key rotation schedule's parameters: a key stays published, after it stops signing, for
        the longest child lifetime plus the leeway verifiers give ``exp``."""
        return RotationPolicy(
            interval=self.rotation_interval_seconds,
            publish_ahead=self.publish_ahead_seconds,
            longest_lifetime=float(self.max_lifetime_seconds + self.leeway_seconds),
        )

    def _validate_rotation(self) -> None:
        """Rules of automatic key rotation; nothing to check while it is off."""
        if self.key_directory is None:
            return
        for path, files in (
            ("issuer.signing_key_files", self.signing_key_files),
            ("issuer.next_signing_key_files", self.next_signing_key_files),
        ):
            if files:
                raise ConfigError(path, "give signing key files or issuer.key_directory, not both")
        if not 0 < self.publish_ahead_seconds < self.rotation_interval_seconds:
            raise ConfigError(
                "keys.publish_ahead_seconds", "must be positive and less than keys.rotation_interval_seconds"
            )
        longest = self.rotation_policy().max_cache_seconds
        if self.jwks_max_age_seconds > longest:
            # A verifier caching our JWKS longer could meet a kid published after its fetch.
            raise ConfigError(
                "admin.jwks_max_age_seconds",
                f"must be at most {longest:g} s with key rotation: keys.publish_ahead_seconds less the"
                f" {self.rotation_policy().reread_seconds:g} s in which every process reads a new key",
            )

    def _validate_lifecycle(self) -> None:
        """Rules of the shutdown and worker-restart settings."""
        for path, value in (
            ("server.drain_seconds", self.drain_seconds),
            ("server.grace_seconds", self.grace_seconds),
            ("workers.restart_backoff_seconds", self.worker_restart_backoff_seconds),
        ):
            if value < 0:
                raise ConfigError(path, "must not be negative")
        if self.worker_restart_backoff_max_seconds < self.worker_restart_backoff_seconds:
            raise ConfigError("workers.restart_backoff_max_seconds", "must be >= restart_backoff_seconds")
        if self.worker_crash_loop_crashes < 1:
            raise ConfigError("workers.crash_loop_crashes", "must be at least 1")
        if self.worker_crash_loop_window_seconds <= 0:
            raise ConfigError("workers.crash_loop_window_seconds", "must be positive")

    def _validate_redis_reliability(self) -> None:
        if self.redis_breaker_failures <= 0:
            raise ConfigError("redis.breaker_failures", "must be positive")
        if self.redis_breaker_cooldown_ms <= 0:
            raise ConfigError("redis.breaker_cooldown_ms", "must be positive")
        if self.redis_min_replicas_acked < 0:
            raise ConfigError("redis.min_replicas_acked", "must be 0 (off) or positive")
        if self.redis_min_replicas_acked and self.redis_mode == "cluster":
            # WAIT counts the replicas of the node the connection is on; a cluster pipeline cannot pin
            # it to the node that took the write.
            raise ConfigError("redis.min_replicas_acked", "is supported in standalone and sentinel mode")
        if not 0 < self.redis_replica_ack_timeout_ms < self.redis_timeout_ms:
            # WAIT is one Redis command: it must return before the socket timeout gives up on it.
            raise ConfigError(
                "redis.replica_ack_timeout_ms", "must be positive and less than redis.timeout_ms"
            )

    def _validate_security(self) -> None:
        """Rules of the TLS, access and limit settings."""
        if not 0 < self.handshake_timeout_seconds <= 120:
            raise ConfigError("server.handshake_timeout_seconds", "must be in (0, 120]")
        if self.max_concurrent_rpcs <= 0:
            raise ConfigError("server.max_concurrent_rpcs", "must be positive")
        if not 0 < self.max_streams <= MAX_STREAMS_LIMIT:
            raise ConfigError("server.max_streams", f"must be between 1 and {MAX_STREAMS_LIMIT}")
        if not 0 < self.max_scopes <= MAX_SCOPES_LIMIT:
            raise ConfigError("tokens.max_scopes", f"must be between 1 and {MAX_SCOPES_LIMIT}")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ConfigError("tls.cert_file", "tls.cert_file and tls.key_file go together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ConfigError("tls.client_ca_file", "needs tls.cert_file and tls.key_file (mTLS is TLS)")
        if self.access_mode not in ACCESS_MODES:
            raise ConfigError("access.mode", f"must be one of {', '.join(ACCESS_MODES)}")
        if self.access_mode == "open" and not is_loopback_listen(self.listen):
            raise ConfigError("access.mode", "open is only allowed when server.listen is a loopback address")
        for path, names in (
            ("access.operator_identities", self.operator_identities),
            ("access.introspection_identities", self.introspection_identities),
        ):
            if names and self.tls_client_ca_file is None:
                raise ConfigError(path, "certificate identities need tls.client_ca_file (mTLS)")
            if any(not name or not name.isprintable() for name in names):
                raise ConfigError(path, "entries must be non-empty printable strings")
        for path, scope in (
            ("access.operator_scope", self.operator_scope),
            ("access.introspection_scope", self.introspection_scope),
        ):
            if scope and (" " in scope or not scope.isprintable()):
                raise ConfigError(path, "must be one scope (printable, no spaces)")


def is_loopback_listen(listen: str) -> bool:
    """Whether a ``host:port`` listen address binds loopback only (``localhost``, 127.0.0.0/8, ``[::1]``)."""
    host = listen.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def settings() -> list[dataclasses.Field[Any]]:
    """The declared settings, in declaration order."""
    return list(dataclasses.fields(Config))


def env_name(setting: dataclasses.Field[Any]) -> str | None:
    """The environment variable that overrides a setting (``None`` for tables)."""
    path: str = setting.metadata["path"]
    return None if "." not in path else ENV_PREFIX + path.replace(".", "_").upper()


def load(path: Path | None, environ: Mapping[str, str]) -> Config:
    """Read the TOML file (if any), apply environment overrides, convert, validate."""
    data: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise ConfigError("--config", f"cannot read {path}: {error.strerror}") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError("--config", f"{path} is not valid TOML: {error}") from None
        base = path.parent
    _refuse_unknown_keys(data)
    hints = typing.get_type_hints(Config)
    values: dict[str, Any] = {}
    for setting in settings():
        name = env_name(setting)
        raw = (
            environ[name] if name is not None and name in environ else _lookup(data, setting.metadata["path"])
        )
        if raw is not _MISSING:
            values[setting.name] = _convert(raw, hints[setting.name], setting.metadata["path"], base)
    return Config(**values).validate()


_MISSING = object()


def unknown_environment(environ: Mapping[str, str], also_known: Collection[str] = ()) -> list[str]:
    """The ``DELEGATION_*`` variables that override no setting and are not in ``also_known``.

    A warning, not an error: unlike the config file, the environment is shared (the CLI's own
    variables, a platform's injected ones), so a stray name must not stop a server; but a misspelt
    override would otherwise leave a default silently in force.
    """
    known = {name for setting in settings() if (name := env_name(setting))} | set(also_known)
    return sorted(name for name in environ if name.startswith(ENV_PREFIX) and name not in known)


def _refuse_unknown_keys(data: Mapping[str, Any]) -> None:
    """A misspelt setting must fail loudly, not leave a default silently in force."""
    known = {setting.metadata["path"] for setting in settings()}
    sections = {path.split(".")[0] for path in known if "." in path}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}{key}"
            if path in known:
                continue
            if isinstance(value, Mapping) and path in sections:
                walk(value, f"{path}.")
            else:
                raise ConfigError(path, "is not a known setting (see `delegation-service config-reference`)")

    walk(data, "")


def _lookup(data: Mapping[str, Any], path: str) -> Any:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _convert(raw: Any, kind: Any, path: str, base: Path) -> Any:
    """Convert a TOML value or an environment string to the setting's declared type."""
    from_env = isinstance(raw, str)
    origin = typing.get_origin(kind)
    if origin in (types.UnionType, typing.Union):
        inner = next(a for a in typing.get_args(kind) if a is not type(None))
        return None if raw in ("", None) else _convert(raw, inner, path, base)
    if kind is bool:
        if from_env and raw.lower() in ("true", "1", "yes", "false", "0", "no"):
            return raw.lower() in ("true", "1", "yes")
        if isinstance(raw, bool):
            return raw
        raise ConfigError(path, "must be true or false")
    if kind in (int, float):
        if isinstance(raw, bool):
            raise ConfigError(path, f"must be a{'n integer' if kind is int else ' number'}")
        try:
            return kind(raw)
        except (TypeError, ValueError):
            raise ConfigError(path, f"must be a{'n integer' if kind is int else ' number'}") from None
    if kind is str:
        if not isinstance(raw, str):
            raise ConfigError(path, "must be a string")
        return raw
    if kind is Path:
        if not isinstance(raw, str) or not raw:
            raise ConfigError(path, "must be a file path")
        return base / raw
    if origin is tuple:
        item = typing.get_args(kind)[0]
        items = [p for p in raw.split(",") if p] if from_env else raw
        if not isinstance(items, list):
            raise ConfigError(path, "must be a list")
        if item is TrustedIssuer:
            return tuple(_trusted_issuer(t, f"{path}[{i}]", base) for i, t in enumerate(items))
        return tuple(_convert(v, item, path, base) for v in items)
    raise ConfigError(path, f"unsupported type {kind}")  # a bug in the declaration, not in the input


def _trusted_issuer(table: Any, path: str, base: Path) -> TrustedIssuer:
    if not isinstance(table, Mapping):
        raise ConfigError(path, "must be a table with issuer (and jwks_file or jwks_uri)")
    unknown = set(table) - {
        "issuer",
        "jwks_file",
        "jwks_uri",
        "ca_file",
        *(rule.name for rule in dataclasses.fields(IssuerRules)),
        *(name for name, _ in _REMOTE_NUMBERS),
    }
    if unknown:
        raise ConfigError(f"{path}.{sorted(unknown)[0]}", "is not a known key")
    if not isinstance(table.get("issuer"), str) or not table["issuer"]:
        raise ConfigError(f"{path}.issuer", "is required")
    algorithms = table.get("algorithms", list(DEFAULT_UPSTREAM_ALGORITHMS))
    if (
        not isinstance(algorithms, list)
        or not algorithms
        or any(a not in ASYMMETRIC_ALGORITHMS for a in algorithms)
    ):
        raise ConfigError(
            f"{path}.algorithms",
            f"must list asymmetric algorithms ({', '.join(sorted(ASYMMETRIC_ALGORITHMS))})",
        )
    if "jwks_file" in table and "jwks_uri" in table:
        raise ConfigError(f"{path}.jwks_uri", "give jwks_file or jwks_uri, not both")
    jwks_file = table.get("jwks_file")
    jwks_uri = _convert(table.get("jwks_uri", ""), str | None, f"{path}.jwks_uri", base)
    # Remote keys: the URL we will fetch must pass the fetcher's own rule (one home: http_fetch).
    for name, url in (
        ("jwks_uri", jwks_uri),
        ("issuer", table["issuer"] if jwks_file is None and jwks_uri is None else None),
    ):
        if url is not None:
            try:
                check_fetch_url(url)
            except ValueError as error:
                raise ConfigError(f"{path}.{name}", str(error)) from None
    numbers = {
        name: _convert(table[name], kind, f"{path}.{name}", base)
        for name, kind in _REMOTE_NUMBERS
        if name in table
    }
    for name, value in numbers.items():
        if value < 0 or (value == 0 and name != "unknown_kid_interval_seconds"):
            raise ConfigError(f"{path}.{name}", "must be positive")
    actor_claim = _convert(table.get("actor_claim", ""), str | None, f"{path}.actor_claim", base)
    entry = TrustedIssuer(
        issuer=table["issuer"],
        jwks_file=None if jwks_file is None else _convert(jwks_file, Path, f"{path}.jwks_file", base),
        jwks_uri=jwks_uri,
        ca_file=_convert(table.get("ca_file", ""), Path | None, f"{path}.ca_file", base),
        **numbers,
        rules=IssuerRules(
            audience=_convert(table.get("audience", ""), str | None, f"{path}.audience", base),
            algorithms=tuple(algorithms),
            allow_extra_audiences=_convert(
                table.get("allow_extra_audiences", False), bool, f"{path}.allow_extra_audiences", base
            ),
            actor_claim=actor_claim,
            claims=_claim_mapping(table.get("claims", {}), f"{path}.claims", actor_claim),
            allow_high_s=_convert(table.get("allow_high_s", False), bool, f"{path}.allow_high_s", base),
        ),
    )
    if entry.refresh_min_seconds > entry.refresh_max_seconds:
        raise ConfigError(f"{path}.refresh_min_seconds", "must not exceed refresh_max_seconds")
    return entry


_CLAIM_KEYS = frozenset(
    {"scopes", "scopes_format", "client", "bearer_claim", "bearer_id_claim", "bearer_type", "bearer"}
)


def _claim_name(table: Mapping[str, Any], key: str, path: str) -> str | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{path}.{key}", "must be a claim name (a non-empty string)")
    return value


def _claim_mapping(table: Any, path: str, actor_claim: str | None) -> ClaimMapping:
    """``[trusted_issuers.claims]`` (and its ``client_bearers`` table) as a checked mapping."""
    if not isinstance(table, Mapping):
        raise ConfigError(path, "must be a table")
    unknown = set(table) - _CLAIM_KEYS - {"client_bearers"}
    if unknown:
        raise ConfigError(f"{path}.{sorted(unknown)[0]}", "is not a known key")
    scopes_format = table.get("scopes_format")
    formats = [f.value for f in ScopeFormat]
    if scopes_format is not None and scopes_format not in formats:
        raise ConfigError(f"{path}.scopes_format", f"must be one of {', '.join(formats)}")
    scopes = table.get("scopes")
    scopes_claims = [scopes] if isinstance(scopes, str) else scopes
    if scopes_claims is not None and (
        not isinstance(scopes_claims, list)
        or not scopes_claims
        or not all(isinstance(c, str) and c for c in scopes_claims)
    ):
        raise ConfigError(f"{path}.scopes", "must be a claim name or a list of claim names")
    client = table.get("client", list(DEFAULT_CLIENT_CLAIMS))
    clients = [client] if isinstance(client, str) else client
    if not isinstance(clients, list) or not clients or not all(isinstance(c, str) and c for c in clients):
        raise ConfigError(f"{path}.client", "must be a claim name or a list of claim names")
    bearer_type = table.get("bearer_type")
    types = [t.value for t in BearerType]
    if bearer_type is not None and bearer_type not in types:
        raise ConfigError(f"{path}.bearer_type", f"must be one of {', '.join(types)}")
    client_bearers = table.get("client_bearers", {})
    if not isinstance(client_bearers, Mapping):
        raise ConfigError(f"{path}.client_bearers", 'must be a table of client id = "Org/<id>"')
    try:
        mapping = ClaimMapping(
            scopes_claims=None if scopes_claims is None else tuple(scopes_claims),
            scopes_format=None if scopes_format is None else ScopeFormat(scopes_format),
            client_claims=tuple(clients),
            bearer_claim=_claim_name(table, "bearer_claim", path) or DEFAULT_BEARER_CLAIM,
            bearer_id_claim=_claim_name(table, "bearer_id_claim", path),
            bearer_type=None if bearer_type is None else BearerType(bearer_type),
            bearer=None if "bearer" not in table else parse_fixed_bearer(table["bearer"], "bearer"),
            client_bearers={
                client_id: parse_fixed_bearer(value, f"client_bearers.{client_id}")
                for client_id, value in client_bearers.items()
            },
        )
        return mapping.with_actor_claim(actor_claim)
    except ClaimMappingError as error:
        setting = "client" if error.setting == "client" and actor_claim is not None else error.setting
        raise ConfigError(f"{path}.{setting}", error.message) from None


def reference_markdown() -> str:
    """The configuration reference as a Markdown table (the README embeds it)."""
    rows = ["| setting | environment variable | default | meaning |", "|---|---|---|---|"]
    for setting in settings():
        default = setting.default
        shown = (
            ""
            if default in ((), None, "")
            else f"`{str(default).lower() if isinstance(default, bool) else default}`"
        )
        env = f"`{env_name(setting)}`" if env_name(setting) else ""
        rows.append(f"| `{setting.metadata['path']}` | {env} | {shown} | {setting.metadata['help']} |")
    return "\n".join(rows) + "\n"
