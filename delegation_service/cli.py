"""The ``delegation-service`` command: run the server, and call it as a client or an operator.

Exit codes: 0 success, 1 the service refused the call, 2 bad usage or configuration, 3 the service or
its store is unavailable (or the call timed out).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from delegation_service import version
from delegation_service.adapters.keys import SIGNING_ALGORITHMS
from delegation_service.config import ConfigError
from delegation_service.signals import wait_for_stop_signal

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3
DEFAULT_ADDRESS = "127.0.0.1:50051"
CLIENT_ENVIRONMENT = frozenset(
    {
        # This command's client options, and what the dev server's banner exports beside them.
        "DELEGATION_ADDRESS",
        "DELEGATION_PARENT_TOKEN",
        "DELEGATION_OPERATOR_TOKEN",
        "DELEGATION_ADMIN_URL",
        "DELEGATION_TLS_CA",
        "DELEGATION_TLS_CERT",
        "DELEGATION_TLS_KEY",
        "DELEGATION_EDGE_TOKEN",
        # examples/node/delegate.mjs, run from the same shell in the README.
        "DELEGATION_CLIENT_ID",
        "DELEGATION_SCOPES",
        "DELEGATION_AUDIENCE",
        "DELEGATION_PROTO_ROOT",
    }
)
"""``DELEGATION_*`` variables that are not settings but are expected in an operator's environment."""
_UNAVAILABLE_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

log = logging.getLogger(__name__)


class UsageError(Exception):
    """Raised for a command line that cannot be carried out as given."""


class _Parser(argparse.ArgumentParser):
    """An argument parser that never expands an abbreviated option.

    argparse's default takes ``--client`` for ``--client-id`` (or any unique prefix): a typo, or an
    option a later version adds, would silently mean something else. Sub-command parsers inherit the
    class (``add_subparsers`` uses the parent's type), so every parser of the command gets this.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


ID_OPTIONS = frozenset({"--chain-id", "--token-id"})
"""Options whose value is an id: base64url, so it may begin with "-", which argparse would take for an
option ("expected one argument") one time in 32."""


def _attach_id_values(argv: Sequence[str]) -> list[str]:
    """``--chain-id -x`` as ``--chain-id=-x``: an id option always takes the next word as its value."""
    words = list(argv)
    attached: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        if word in ID_OPTIONS and index + 1 < len(words):
            attached.append(f"{word}={words[index + 1]}")
            index += 2
            continue
        attached.append(word)
        index += 1
    return attached


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``delegation-service`` command."""
    parser = _parser()
    args = parser.parse_args(_attach_id_values(sys.argv[1:] if argv is None else argv))
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as error:  # one line naming the setting, never a traceback
        print(f"configuration error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except grpc.RpcError as error:
        return _report_rpc_error(error, args)
    except OSError as error:  # a file named on the command line that cannot be read or written
        print(f"error: {error.filename or ''}: {error.strerror or error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK


# -- server commands --------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    from delegation_service import config, logs, workers

    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    settings = config.load(Path(args.config), os.environ)
    _warn_unknown_environment()
    if args.workers == 1:
        return _serve_worker(args.config, reuse_port=False)
    if settings.listen.endswith(":0"):
        raise UsageError("--workers needs a fixed port in server.listen (the workers share it)")
    logs.configure(settings.log_level)
    policy = workers.RestartPolicy(
        backoff_seconds=settings.worker_restart_backoff_seconds,
        max_backoff_seconds=settings.worker_restart_backoff_max_seconds,
        crash_loop_crashes=settings.worker_crash_loop_crashes,
        crash_loop_window_seconds=settings.worker_crash_loop_window_seconds,
    )
    return workers.supervise(
        args.workers,
        functools.partial(_serve_worker_of, args.config),
        stop_seconds=settings.drain_seconds + settings.grace_seconds,
        policy=policy,
    )


def _serve_worker_of(config_path: str, index: int) -> int:
    # One admin port per host: the first worker opens it; its /metrics sums every worker's (workers.py).
    return _serve_worker(config_path, reuse_port=True, admin=index == 0)


def _serve_worker(config_path: str, reuse_port: bool, admin: bool = True) -> int:
    """One server process: load, build, serve until a signal, drain."""
    from delegation_service import app, config, logs

    try:
        settings = config.load(Path(config_path), os.environ)
        logs.configure(settings.log_level)
        application = app.build(settings)
        running = application.serve(reuse_port=reuse_port, admin=admin)
    except ConfigError as error:  # a worker process: main()'s handler is not above it
        print(f"configuration error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except RuntimeError as error:
        print(f"cannot start: {error}", file=sys.stderr)
        return EXIT_USAGE
    return _run_until_signal(
        running, settings.grace_seconds, settings.drain_seconds, before_exit=_tracing_flush(application)
    )


def _dev(args: argparse.Namespace) -> int:
    from delegation_service import dev, logs

    logs.configure("INFO", human=True)
    redis_url = os.environ.get("REDIS_URL") or None
    # A fixed admin port beside the gRPC one, so a restarted dev server keeps DELEGATION_ADMIN_URL.
    admin_port = args.admin_port if args.admin_port is not None else (args.port + 1 if args.port else 0)
    oauth_port = args.oauth_port if args.oauth_port is not None else (args.port + 2 if args.port else 0)
    application, parent, operator_secret = dev.build_dev(args.port, redis_url, admin_port, oauth_port)
    try:
        running = application.serve(admin=True)
    except RuntimeError as error:
        print(f"cannot start: {error} (is another server on port {args.port}? try --port)", file=sys.stderr)
        return EXIT_USAGE
    dev.print_banner(
        sys.stdout,
        f"127.0.0.1:{running.port}",
        "Redis" if redis_url else "in-memory store",
        parent,
        operator_secret,
        admin_url=_admin_url(running),
        oauth_url=_oauth_url(running),
    )
    # No drain period: the dev server is on loopback, with no load balancer to tell.
    return _run_until_signal(
        running, application.config.grace_seconds, drain_seconds=0.0, before_exit=_tracing_flush(application)
    )


def _admin_url(running: Any) -> str:
    """The admin HTTP port's URL on loopback, or empty when it is off."""
    admin = getattr(running, "admin", None)
    return f"http://127.0.0.1:{admin.port}" if admin is not None else ""


def _oauth_url(running: Any) -> str:
    """The OAuth HTTP port's URL, or empty when it is off."""
    oauth = getattr(running, "oauth", None)
    return str(oauth.base_url) if oauth is not None else ""


def _tracing_flush(application: Any) -> Callable[[], None] | None:
    """What exports the spans still buffered before the process exits (``None``: tracing is off)."""
    tracing = application.tracing
    return tracing.shutdown if tracing is not None else None


def _run_until_signal(
    running: Any, grace: float, drain_seconds: float, before_exit: Callable[[], None] | None = None
) -> NoReturn:
    """Serve until SIGTERM or SIGINT, drain (README "Shutdown"), then exit without grpc's ``stop()``.

    Once drained nothing is in flight, but grpc's ``stop()`` would still cancel (``CANCELLED``, which
    clients do not retry) the calls that reached the server in its last instant; exiting closes the
    connections instead, which clients read as ``UNAVAILABLE`` and retry elsewhere.
    """
    wait_for_stop_signal()
    log.info(
        "draining",
        extra={"event": "shutdown", "drain_seconds": drain_seconds, "grace_seconds": grace},
    )
    running.drain(grace, drain_seconds)
    for port in (getattr(running, "oauth", None), getattr(running, "admin", None)):
        if port is not None:
            port.stop()
    if before_exit is not None:
        before_exit()
    log.info("exiting", extra={"event": "exit"})
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_OK)


def _health(args: argparse.Namespace) -> int:
    if args.config:
        return _health_of_config(args)
    return _grpc_health(args)


def _health_of_config(args: argparse.Namespace) -> int:
    """Probe the server that a config file (and the environment) describes, from its own host.

    What a container's HEALTHCHECK runs: it finds the ports wherever the config puts them. The admin
    port's ``/readyz`` answers with the gRPC health status itself, over plain HTTP whatever TLS or mTLS
    the gRPC port requires, so it is asked when ``admin.listen`` is set; otherwise grpc.health.v1 on
    ``server.listen``, which with TLS needs ``--tls-ca`` (and a client certificate under mTLS).
    """
    from delegation_service import config

    settings = config.load(Path(args.config), os.environ)
    if settings.admin_listen:
        return _readyz(_local_address(settings.admin_listen), args.timeout)
    if settings.tls_cert_file is not None and not args.tls_ca:
        raise UsageError(
            "the gRPC port uses TLS and admin.listen is off: pass --tls-ca (or set DELEGATION_TLS_CA)"
        )
    args.address = _local_address(settings.listen)
    return _grpc_health(args)


def _local_address(listen: str) -> str:
    """Where a probe on the server's own host reaches a listen address (a wildcard: loopback)."""
    from delegation_service.transport.http import WILDCARD_HOSTS

    host, _, port = listen.rpartition(":")
    if host in WILDCARD_HOSTS:
        host = "[::1]" if ":" in host else "127.0.0.1"
    return f"{host}:{port}"


def _readyz(address: str, timeout: float) -> int:
    import http.client

    connection = http.client.HTTPConnection(address, timeout=timeout)
    try:
        connection.request("GET", "/readyz")
        response = connection.getresponse()
        response.read()  # closing with the body unread resets the connection: a traceback in its log
        status = response.status
    except OSError as error:
        print(f"unhealthy: http://{address}/readyz: {error.strerror or error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    finally:
        connection.close()
    if status != 200:
        print(f"unhealthy: http://{address}/readyz answered {status}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    print("SERVING")
    return EXIT_OK


def _grpc_health(args: argparse.Namespace) -> int:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    credentials = _channel_credentials(args)
    channel = (
        grpc.secure_channel(args.address, credentials)
        if credentials is not None
        else grpc.insecure_channel(args.address)
    )
    with channel:
        try:
            stub: Any = health_pb2_grpc.HealthStub(channel)  # the typeshed stub omits the RPC methods
            response = stub.Check(health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
        except grpc.RpcError as error:
            print(
                f"unhealthy: {error.code().name if isinstance(error, grpc.Call) else error}", file=sys.stderr
            )
            return EXIT_UNAVAILABLE
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(status)
    return EXIT_OK if response.status == health_pb2.HealthCheckResponse.SERVING else EXIT_UNAVAILABLE


def _config_reference(args: argparse.Namespace) -> int:
    from delegation_service.config import reference_markdown

    print(reference_markdown(), end="")
    return EXIT_OK


def _config_check(args: argparse.Namespace) -> int:
    """Validate the configuration, print every effective setting (secrets masked), and fetch each
    trusted issuer's keys once; exit 1 if one has none."""
    from delegation_service import app, config, config_report

    settings = config.load(Path(args.config), os.environ)
    _warn_unknown_environment()
    statuses = app.issuer_statuses(settings)
    rows = [
        {
            "issuer": status.issuer,
            "source": status.origin,
            "state": status.state.value,
            "keys": status.keys,
            "error": status.last_error,
        }
        for status in statuses
    ]
    if args.output == "json":
        report = {"config": "ok", "settings": config_report.effective(settings), "trusted_issuers": rows}
        print(json.dumps(report, indent=2))
    else:
        print("config: ok")
        print(config_report.render_text(settings), end="")
        for row in rows:
            detail = f" ({row['error']})" if row["error"] else ""
            print(
                f"trusted issuer {row['issuer']}: {row['state']}, {row['keys']} keys"
                f" from {row['source']}{detail}"
            )
    return EXIT_OK if all(status.usable for status in statuses) else EXIT_REFUSED


def _warn_unknown_environment() -> None:
    """One stderr line per ``DELEGATION_*`` variable that is no setting (a typo leaves a default on)."""
    import difflib

    from delegation_service import config

    names = [name for setting in config.settings() if (name := config.env_name(setting))]
    for name in config.unknown_environment(os.environ, CLIENT_ENVIRONMENT):
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        print(f"warning: environment variable {name} is not a setting; ignored{hint}", file=sys.stderr)


def _keys_generate(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives import serialization

    from delegation_service.adapters.keys import generate_signing_key

    key = generate_signing_key(args.alg)
    pem = key.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    out = Path(args.out)
    if out.exists() and not args.force:
        raise UsageError(f"{out} exists (use --force to overwrite)")
    out.touch(mode=0o600, exist_ok=True)
    out.write_bytes(pem)
    print(json.dumps({"kid": key.kid, "alg": key.alg, "file": str(out)}))
    return EXIT_OK


def _dpop_proof(args: argparse.Namespace) -> int:
    from delegation_service.adapters.dpop import make_proof
    from delegation_service.adapters.keys import load_private_key_file

    try:
        key = load_private_key_file(args.key, args.alg)
    except (OSError, ValueError) as error:
        raise UsageError(f"--key {args.key}: {error}") from None
    print(make_proof(key, args.method, args.url, args.token))
    return EXIT_OK


def _keys_list(args: argparse.Namespace) -> int:
    """The configured signing keys: kid, alg, role (active, next, previous) and file; with
    ``issuer.key_directory``, each key's rotation state and times instead."""
    from delegation_service import app, config

    settings = config.load(Path(args.config), os.environ)
    if settings.key_directory is not None:
        return _rotating_keys_list(settings, settings.key_directory, args.output)
    key_set = app.signing_keys(settings)
    files = [
        *settings.signing_key_files,
        *settings.next_signing_key_files,
    ]
    by_kid = {key.kid: path for key, path in zip(_keys_in_file_order(key_set), files, strict=True)}
    rows = [
        {"kid": key.kid, "alg": key.alg, "role": role.value, "file": str(by_kid[key.kid])}
        for key, role in key_set.roles()
    ]
    if args.output == "json":
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    print(f"{'kid':<44} {'alg':<6} {'role':<9} file")
    for row in rows:
        print(f"{row['kid']:<44} {row['alg']:<6} {row['role']:<9} {row['file']}")
    return EXIT_OK


def _rotating_keys_list(settings: Any, directory: Path, output: str) -> int:
    """The keys of the key directory with their state now: pending, active, retiring or retired."""
    import time

    from delegation_service.adapters.key_directory import KeyDirectory, KeyDirectoryError
    from delegation_service.domain.rotation import schedule

    try:
        stored = KeyDirectory(directory).load()
    except KeyDirectoryError as error:
        raise ConfigError("issuer.key_directory", str(error)) from None
    now = time.time()
    current = schedule([key.record for key in stored], settings.rotation_policy(), now)
    algorithms = {key.key.kid: key.key.alg for key in stored}
    files = {key.key.kid: str(key.path) for key in stored}
    rows = [
        {
            "generation": timeline.key.generation,
            "kid": timeline.key.kid,
            "alg": algorithms[timeline.key.kid],
            "state": timeline.state.value,
            "created": _utc(timeline.key.created_at),
            "signs_from": _utc(timeline.activates_at),
            "signs_until": _utc(timeline.superseded_at),
            "retires": _utc(timeline.retires_at),
            "file": files[timeline.key.kid],
        }
        for timeline in current.keys
    ]
    if output == "json":
        print(json.dumps({"keys": rows, "next_key_due": _utc(current.next_due_at)}, indent=2))
        return EXIT_OK
    print(f"{'gen':>4} {'kid':<44} {'alg':<6} {'state':<9} {'signs from':<20} {'retires':<20} file")
    for row in rows:
        print(
            f"{row['generation']:>4} {row['kid']:<44} {row['alg']:<6} {row['state']:<9}"
            f" {row['signs_from']:<20} {row['retires'] or '-':<20} {row['file']}"
        )
    print(f"next key due: {_utc(current.next_due_at)}")
    return EXIT_OK


def _utc(moment: float | None) -> str | None:
    """A Unix time as ISO 8601 UTC to the second (``None`` stays ``None``)."""
    import datetime

    if moment is None:
        return None
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _keys_in_file_order(key_set: Any) -> list[Any]:
    """The keys in the order their files are configured: active, previous..., then next..."""
    return [key_set.active, *key_set.previous_keys, *key_set.next_keys]


# -- client commands ---------------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> Any:
    from delegation_service.client import DelegationClient

    return DelegationClient(
        args.address,
        timeout=args.timeout,
        operator_token=args.operator_token,
        credentials=_channel_credentials(args),
    )


def _channel_credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    """TLS credentials from --tls-ca/--tls-cert/--tls-key (mTLS with a certificate), else plaintext."""
    from delegation_service.transport.tls import channel_credentials

    if not (args.tls_ca or args.tls_cert or args.tls_key):
        return None
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    try:
        return channel_credentials(
            Path(args.tls_ca) if args.tls_ca else None,
            Path(args.tls_cert) if args.tls_cert else None,
            Path(args.tls_key) if args.tls_key else None,
        )
    except OSError as error:
        raise UsageError(f"cannot read a TLS file: {error}") from None


def _delegate(args: argparse.Namespace) -> int:
    if not args.parent_token:
        raise UsageError("no parent token: pass --parent-token or set DELEGATION_PARENT_TOKEN")
    # --scope and --all-scopes are a required, exclusive pair (the parser enforces it): asking for no
    # scopes mints the broadest child the parent allows, so that is never what a forgotten option means.
    with _client(args) as client:
        response = client.delegate(
            args.parent_token,
            args.client_id,
            () if args.all_scopes else args.scope,
            lifetime_seconds=args.lifetime,
            allow_partial=args.allow_partial,
            validate_only=args.validate_only,
        )
    if args.print_token:
        print(response.access_token)
        return EXIT_OK
    if args.output == "json":
        return _print_json(response)
    print(f"client      {response.client_id}")
    print(f"scopes      {' '.join(response.scopes)}")
    print(f"bearer      {_bearer_text(response.bearer)}")
    print(f"expires     {response.expire_time.ToJsonString()}")
    print(f"chain       {response.chain_id}")
    for refused in response.refused_scopes:
        print(f"dropped     {refused.scope}: {refused.reason}")
    if response.access_token:
        print(f"token id    {response.token_id}")
        print(f"token       {response.access_token}")
    else:
        print("(validate only: nothing minted)")
    return EXIT_OK


def _introspect(args: argparse.Namespace) -> int:
    with _client(args) as client:
        response = client.introspect(args.token)
    if args.output == "json":
        _print_json(response)
    elif not response.active:
        print("active      false")
    else:
        print("active      true")
        for label, value in (
            (
                "kind",
                response.DESCRIPTOR.fields_by_name["kind"].enum_type.values_by_number[response.kind].name,
            ),
            ("subject", response.subject),
            ("client", response.client_id),
            ("scopes", " ".join(response.scopes)),
            ("bearer", _bearer_text(response.bearer)),
            ("expires", response.expire_time.ToJsonString()),
            ("token id", response.token_id),
            ("chain", response.chain_id),
        ):
            print(f"{label:<11} {value}")
    return EXIT_OK if response.active else EXIT_REFUSED


def _revoke_token(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.revoke(args.token)
    print("revoked")
    return EXIT_OK


def _revoke_chain(args: argparse.Namespace) -> int:
    with _client(args) as client:
        chain_id = _chain_id(client, args)
        preview = client.revoke_chain(chain_id, args.token_id, dry_run=True)
        if args.dry_run:
            return _print_radius(preview, args, "would revoke")
        what = f"token {args.token_id} of chain {chain_id}" if args.token_id else f"chain {chain_id}"
        _confirm(args, f"Revoke {what}: {preview.revoked_token_count} live token(s)?")
        response = client.revoke_chain(chain_id, args.token_id, justification=args.justification)
    return _print_radius(response, args, "revoked")


def _revoke_subject(args: argparse.Namespace) -> int:
    _confirm(args, f"Revoke every token of subject {args.subject!r} issued up to now?")
    with _client(args) as client:
        response = client.revoke_subject(args.subject, args.justification)
    return _print_horizon(response, args, f"subject {args.subject}")


def _revoke_client(args: argparse.Namespace) -> int:
    _confirm(args, f"Revoke every token of client {args.client_id!r} issued up to now?")
    with _client(args) as client:
        response = client.revoke_client(args.client_id, args.justification)
    return _print_horizon(response, args, f"client {args.client_id}")


def _chain_show(args: argparse.Namespace) -> int:
    with _client(args) as client:
        response = client.get_chain(_chain_id(client, args))
    if args.output == "json":
        return _print_json(response)
    from delegation_service import operator_view

    if operator_view.is_terminal(sys.stdout):
        operator_view.render_chain(response, operator_view.console(sys.stdout, args.wide), wide=args.wide)
    else:  # a pipe or a file: whole ids always, so --wide changes nothing there
        operator_view.render_chain_plain(response, sys.stdout)
    return EXIT_OK


def _chain_id(client: Any, args: argparse.Namespace) -> str:
    """The chain named on the command line, directly or through a token of it."""
    if args.chain_id:
        return str(args.chain_id)
    if not args.token:
        raise UsageError("name the chain with --chain-id or --token")
    introspection = client.introspect(args.token)
    if not introspection.active:
        raise UsageError("the token is not active, so its chain cannot be found from it; use --chain-id")
    return str(introspection.chain_id)


def _confirm(args: argparse.Namespace, question: str) -> None:
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise UsageError("refusing to revoke without confirmation: pass --yes")
    if input(f"{question} [y/N] ").strip().lower() not in ("y", "yes"):
        raise UsageError("not confirmed")


def _print_radius(response: Any, args: argparse.Namespace, verb: str) -> int:
    if args.output == "json":
        return _print_json(response)
    clients = ", ".join(response.client_ids) or "none"
    print(f"{verb} {response.revoked_token_count} live token(s); clients: {clients}")
    return EXIT_OK


def _print_horizon(response: Any, args: argparse.Namespace, what: str) -> int:
    if args.output == "json":
        return _print_json(response)
    print(f"revoked every token of {what} issued at or before {response.revoke_time.ToJsonString()}")
    return EXIT_OK


def _print_json(message: Message) -> int:
    print(json.dumps(json_format.MessageToDict(message, preserving_proto_field_name=True), indent=2))
    return EXIT_OK


def _bearer_text(bearer: Any) -> str:
    kind = {1: "Per", 2: "Org"}.get(bearer.type, "?")
    return f"{kind}/{bearer.id}" if bearer.id else kind


def _report_rpc_error(error: grpc.RpcError, args: argparse.Namespace) -> int:
    from delegation_service.client import error_details

    details = error_details(error)
    if getattr(args, "output", "text") == "json":
        print(
            json.dumps(
                {
                    "code": details.code.name,
                    "message": details.message,
                    "reason": details.reason,
                    "metadata": details.metadata,
                    "violations": [
                        {"field": f, "reason": r, "description": d} for f, r, d in details.violations
                    ],
                },
                indent=2,
            ),
            file=sys.stderr,
        )
    else:
        reason = f" {details.reason}" if details.reason else ""
        print(f"error: {details.code.name}{reason}: {details.message}", file=sys.stderr)
        for field, reason, description in details.violations:
            print(f"  {field}: {reason}: {description}", file=sys.stderr)
    return EXIT_UNAVAILABLE if details.code in _UNAVAILABLE_CODES else EXIT_REFUSED


# -- argument parsing --------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="delegation-service", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    _add_server_commands(commands)
    revoke_kinds = _add_client_commands(commands)
    _add_operator_commands(commands, revoke_kinds)
    from delegation_service.edge.command import add_edge_command

    add_edge_command(commands)
    return parser


def _add_server_commands(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run the production server from a config file")
    serve.add_argument("--config", required=True, help="TOML configuration file")
    serve.add_argument(
        "--workers", type=int, default=1, help="server processes sharing the port (SO_REUSEPORT); default 1"
    )
    serve.set_defaults(handler=_serve)

    dev = commands.add_parser("dev", help="run a throw-away dev server on loopback with a demo token")
    dev.add_argument("--port", type=int, default=50051, help="loopback port (default 50051; 0 picks one)")
    dev.add_argument(
        "--admin-port", type=int, help="admin HTTP loopback port (default: --port + 1; 0 picks one)"
    )
    dev.add_argument(
        "--oauth-port", type=int, help="OAuth HTTP loopback port (default: --port + 2; 0 picks one)"
    )
    dev.set_defaults(handler=_dev)

    health = commands.add_parser("health", help="exit 0 when the server reports SERVING")
    _add_address(health)
    health.add_argument("--service", default="", help="service name to check (default: the server)")
    health.add_argument(
        "--config",
        help="probe the server this TOML file (and the environment) configures, on this host: its admin"
        " port's /readyz when admin.listen is set, else gRPC health on server.listen (--address ignored)",
    )
    health.set_defaults(handler=_health)

    reference = commands.add_parser("config-reference", help="print every setting as a Markdown table")
    reference.set_defaults(handler=_config_reference)

    config_cmd = commands.add_parser("config", help="configuration tools").add_subparsers(
        required=True, metavar="ACTION"
    )
    check = config_cmd.add_parser(
        "check",
        help="validate a config file, print the effective settings (secrets masked) and each trusted"
        " issuer's keys (one fetch each)",
    )
    check.add_argument("--config", required=True, help="TOML configuration file")
    check.add_argument("--output", choices=("text", "json"), default="text", help="output format")
    check.set_defaults(handler=_config_check)

    keys = commands.add_parser("keys", help="signing key tools").add_subparsers(
        required=True, metavar="ACTION"
    )
    generate = keys.add_parser("generate", help="write a new private signing key (PEM, mode 0600)")
    generate.add_argument("--alg", default="ES256", choices=SIGNING_ALGORITHMS)
    generate.add_argument("--out", required=True, help="file to write")
    generate.add_argument("--force", action="store_true", help="overwrite an existing file")
    generate.set_defaults(handler=_keys_generate)
    listing = keys.add_parser(
        "list",
        help="the configured signing keys: kid, alg, role (active/next/previous); with a key directory,"
        " each key's rotation state (pending/active/retiring/retired) and times",
    )
    listing.add_argument("--config", required=True, help="TOML configuration file")
    listing.add_argument("--output", choices=("text", "json"), default="text", help="output format")
    listing.set_defaults(handler=_keys_list)

    dpop = commands.add_parser("dpop", help="DPoP (RFC 9449) tools").add_subparsers(
        required=True, metavar="ACTION"
    )
    proof = dpop.add_parser(
        "proof", help="print a DPoP proof for one request, signed with a key from `keys generate`"
    )
    proof.add_argument("--key", required=True, help="private key file (PEM); its kid is the jkt")
    proof.add_argument("--alg", default="ES256", choices=SIGNING_ALGORITHMS)
    proof.add_argument("--url", required=True, help="the request's URL (htu)")
    proof.add_argument("--method", default="POST", help="the request's method (htm), default POST")
    proof.add_argument("--token", help="the access token sent with the request (ath)")
    proof.set_defaults(handler=_dpop_proof)


def _add_client_commands(commands: Any) -> Any:
    """The commands any holder may run; returns the ``revoke`` sub-commands for the operator's."""
    delegate = commands.add_parser("delegate", help="mint a child token from a parent token")
    _add_client_options(delegate)
    delegate.add_argument(
        "--parent-token",
        default=os.environ.get("DELEGATION_PARENT_TOKEN"),
        help="parent token (default: $DELEGATION_PARENT_TOKEN)",
    )
    delegate.add_argument("--client-id", required=True, help="target client (subsystem)")
    wanted = delegate.add_mutually_exclusive_group(required=True)
    wanted.add_argument("--scope", action="append", help="scope(s), space-separated; repeatable")
    wanted.add_argument(
        "--all-scopes",
        action="store_true",
        help="request no scopes: every parent scope the client may hold (the broadest child)",
    )
    delegate.add_argument("--lifetime", type=int, help="lifetime in seconds")
    delegate.add_argument(
        "--allow-partial", action="store_true", help="drop refused scopes instead of failing"
    )
    delegate.add_argument("--validate-only", action="store_true", help="check only; mint nothing")
    delegate.add_argument("--print-token", action="store_true", help="print only the token")
    delegate.set_defaults(handler=_delegate)

    introspect = commands.add_parser("introspect", help="is a token active? (exit 1 when not)")
    # Introspection needs an authorised caller: a client certificate, or an operator secret or caller JWT.
    _add_operator_options(introspect, confirm=False)
    introspect.add_argument("token")
    introspect.set_defaults(handler=_introspect)

    revoke = commands.add_parser("revoke", help="revoke a token, a chain, a subject or a client")
    kinds = revoke.add_subparsers(required=True, metavar="WHAT")
    token = kinds.add_parser("token", help="revoke a token you hold (RFC 7009)")
    _add_client_options(token)
    token.add_argument("token")
    token.set_defaults(handler=_revoke_token)
    return kinds


def _add_operator_commands(commands: Any, kinds: Any) -> None:
    chain = kinds.add_parser("chain", help="operator: revoke a chain, or a token of it, and all below")
    _add_operator_options(chain)
    _add_chain_selector(chain)
    chain.add_argument("--token-id", default="", help="revoke only this token of the chain and all below it")
    chain.add_argument("--dry-run", action="store_true", help="show the blast radius; revoke nothing")
    chain.set_defaults(handler=_revoke_chain)
    subject = kinds.add_parser("subject", help="operator: revoke every token of a subject")
    _add_operator_options(subject)
    subject.add_argument("subject")
    subject.set_defaults(handler=_revoke_subject)
    client = kinds.add_parser("client", help="operator: revoke every token of a client")
    _add_operator_options(client)
    client.add_argument("client_id")
    client.set_defaults(handler=_revoke_client)

    chain_cmd = commands.add_parser("chain", help="inspect chains").add_subparsers(
        required=True, metavar="ACTION"
    )
    show = chain_cmd.add_parser("show", help="operator: a chain's tokens and their states")
    _add_operator_options(show, confirm=False)
    _add_chain_selector(show)
    show.add_argument(
        "--wide",
        action="store_true",
        help="on a terminal, whole token ids and timestamps (lines may pass the terminal's width)",
    )
    show.set_defaults(handler=_chain_show)


def _add_address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        default=os.environ.get("DELEGATION_ADDRESS", DEFAULT_ADDRESS),
        help="server host:port (default: $DELEGATION_ADDRESS or 127.0.0.1:50051)",
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="deadline per call, seconds")
    tls = parser.add_argument_group("TLS (default: plaintext)")
    tls.add_argument(
        "--tls-ca",
        default=os.environ.get("DELEGATION_TLS_CA"),
        help="CA certificate(s) that sign the server's certificate; turns TLS on ($DELEGATION_TLS_CA)",
    )
    tls.add_argument(
        "--tls-cert",
        default=os.environ.get("DELEGATION_TLS_CERT"),
        help="client certificate for mTLS ($DELEGATION_TLS_CERT)",
    )
    tls.add_argument(
        "--tls-key",
        default=os.environ.get("DELEGATION_TLS_KEY"),
        help="its private key ($DELEGATION_TLS_KEY)",
    )


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    _add_address(parser)
    parser.add_argument("--output", choices=("text", "json"), default="text", help="output format")
    parser.set_defaults(operator_token=None)


def _add_operator_options(parser: argparse.ArgumentParser, confirm: bool = True) -> None:
    _add_client_options(parser)
    parser.add_argument(
        "--operator-token",
        default=os.environ.get("DELEGATION_OPERATOR_TOKEN"),
        help="operator secret (default: $DELEGATION_OPERATOR_TOKEN)",
    )
    if confirm:
        parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        parser.add_argument("--justification", default="", help="why; recorded in the audit log")


def _add_chain_selector(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chain-id", help="the chain")
    parser.add_argument("--token", help="an active token of the chain (its chain is looked up)")


if __name__ == "__main__":
    sys.exit(main())
