"""What the service's HTTP ports (admin, and OAuth on either server) share below their rules: the
``host:port`` setting read one way, the one error for a port that cannot be had, and the standard
library's threading server with the service's defaults."""

from __future__ import annotations

import logging
import sys
from http.server import ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

BACKLOG = 128
"""The listen backlog (socketserver's default is 5: a burst of new connections lost SYNs and waited a
second or more for the retransmission)."""


def split_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) as the host (empty for every interface) and the port."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def cannot_listen(listen: str, setting: str, error: OSError) -> RuntimeError:
    """The start-up error for a port that cannot be had (taken, refused), naming its setting."""
    return RuntimeError(f"cannot listen on {listen} ({setting}): {error.strerror}")


class HttpPortServer(ThreadingHTTPServer):
    """A thread per connection (daemon threads), a backlog of :data:`BACKLOG`, and no traceback on
    stderr for a caller that leaves before its answer (socketserver prints one for it)."""

    daemon_threads = True
    request_queue_size = BACKLOG

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A caller that left is no error of ours; anything else goes to the log, once."""
        failure = sys.exc_info()[1]
        if isinstance(failure, ConnectionError | TimeoutError):
            log.debug("http: the caller left (%s)", type(failure).__name__)
        else:
            log.error("http: connection failed", exc_info=True, extra={"event": "http_error"})
