"""``delegation-service edge``: run the edge verifier beside a gateway (ext_authz + forward-auth)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

CALLER_TOKEN_ENV = "DELEGATION_EDGE_TOKEN"


def add_edge_command(commands: Any) -> None:
    """Add the ``edge`` sub-command to the CLI's sub-parsers."""
    edge = commands.add_parser(
        "edge", help="run the edge verifier: Envoy ext_authz (gRPC) and HTTP forward-auth (nginx, Traefik)"
    )
    edge.add_argument("--upstream", required=True, help="the delegation service, host:port")
    edge.add_argument("--feed-upstream", help="follow revocations from this host:port instead (a replica)")
    edge.add_argument("--issuer", required=True, help="the service's issuer (the children's iss)")
    edge.add_argument("--audience", help="refuse children not addressed to this audience")
    edge.add_argument(
        "--route",
        action="append",
        default=[],
        metavar="PREFIX=SCOPE",
        help="paths under PREFIX need SCOPE (repeatable; with any, unlisted paths are refused)",
    )
    edge.add_argument("--mode", choices=("strict", "best_effort"), default="strict", help="past the bound")
    edge.add_argument("--max-staleness", type=float, default=5.0, help="staleness bound, seconds")
    edge.add_argument("--ext-authz-listen", default="127.0.0.1:9191", help="Envoy ext_authz gRPC, host:port")
    edge.add_argument("--http-listen", default="127.0.0.1:9192", help="forward-auth HTTP, host:port")
    tls = edge.add_argument_group("TLS to the service (default: plaintext)")
    tls.add_argument("--tls-ca", help="CA certificate(s) of the service")
    tls.add_argument("--tls-cert", help="client certificate (the edge's introspector identity)")
    tls.add_argument("--tls-key", help="its private key")
    edge.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from delegation_service import logs
    from delegation_service.edge.server import start_edge
    from delegation_service.edge.verifier import EdgeSettings, RouteRule, StalenessMode
    from delegation_service.signals import wait_for_stop_signal
    from delegation_service.transport.tls import channel_credentials

    try:
        settings = EdgeSettings(
            issuer=args.issuer,
            audience=args.audience,
            routes=tuple(RouteRule.parse(text) for text in args.route),
            mode=StalenessMode(args.mode),
            max_staleness_seconds=args.max_staleness,
            caller_token=os.environ.get(CALLER_TOKEN_ENV) or None,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if bool(args.tls_cert) != bool(args.tls_key):
        print("error: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    credentials = None
    if args.tls_ca or args.tls_cert:
        credentials = channel_credentials(
            Path(args.tls_ca) if args.tls_ca else None,
            Path(args.tls_cert) if args.tls_cert else None,
            Path(args.tls_key) if args.tls_key else None,
        )
    logs.configure("INFO")
    running = start_edge(
        settings,
        args.upstream,
        ext_authz_listen=args.ext_authz_listen,
        http_listen=args.http_listen,
        credentials=credentials,
        feed_upstream=args.feed_upstream,
    )
    print(
        f"edge: ext_authz on port {running.ext_authz_port}, forward-auth on port {running.http_port}",
        flush=True,
    )
    wait_for_stop_signal()
    running.stop()
    return 0
