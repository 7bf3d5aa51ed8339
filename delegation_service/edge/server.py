"""The edge as a process: one verifier, served as Envoy ext_authz (gRPC) and HTTP forward-auth."""

from __future__ import annotations

from concurrent import futures
from dataclasses import dataclass

import grpc

from delegation_service.edge import ext_authz
from delegation_service.edge.forward_auth import ForwardAuthServer
from delegation_service.edge.verifier import EdgeSettings, EdgeVerifier


@dataclass
class RunningEdge:
    """A started edge: its verifier, the ext_authz gRPC server and the forward-auth HTTP server."""

    verifier: EdgeVerifier
    grpc_server: grpc.Server
    ext_authz_port: int
    http: ForwardAuthServer

    @property
    def http_port(self) -> int:
        return self.http.port

    def stop(self, grace: float = 1.0) -> None:
        """Stop both faces, then the feed."""
        self.http.stop()
        self.grpc_server.stop(grace).wait()
        self.verifier.close()


def _host_port(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"a listen address is host:port: {listen!r}")
    return host.strip("[]"), int(port)


def start_edge(
    settings: EdgeSettings,
    upstream: str,
    *,
    ext_authz_listen: str = "127.0.0.1:9191",
    http_listen: str = "127.0.0.1:9192",
    credentials: grpc.ChannelCredentials | None = None,
    feed_upstream: str | None = None,
    workers: int = 8,
) -> RunningEdge:
    """Connect to the service, start following its revocations and serve both faces."""

    def channel(address: str) -> grpc.Channel:
        return grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)

    verifier = EdgeVerifier(
        channel(upstream), settings, feed_channel=channel(feed_upstream) if feed_upstream else None
    ).start()
    try:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ext-authz"))
        ext_authz.add_to_server(server, verifier)
        port = server.add_insecure_port(ext_authz_listen)
        server.start()
        host, http_port = _host_port(http_listen)
        http = ForwardAuthServer(verifier, host, http_port).start()
    except BaseException:
        verifier.close()
        raise
    return RunningEdge(verifier, server, port, http)
