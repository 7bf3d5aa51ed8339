"""The revocation feed: follows ``WatchRevocations`` into a :class:`RevocationMirror`, on its own thread.

Cold start: ``include_snapshot`` (the revocations in force), then follow. A stream that ends is resumed
from the last cursor (``UNAVAILABLE``/``SERVER_DRAINING``, a network cut, anything else), after a short
capped back-off; ``OUT_OF_RANGE``/``CURSOR_EXPIRED`` means revocations were missed, so the feed starts
again from a snapshot (merged into the mirror: nothing held is forgotten meanwhile).

The feed asks for heartbeats: each one (and the snapshot-complete marker) proves the service's view was
current at that moment, which is what the staleness bound is measured against.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
from google.protobuf import duration_pb2

from delegation.v1 import delegation_pb2, delegation_pb2_grpc
from delegation_service.client import error_details
from delegation_service.domain.ports import RevocationEvent
from delegation_service.domain.revocation import RevocationKind
from delegation_service.edge.mirror import FeedClock, RevocationMirror

log = logging.getLogger(__name__)

CURSOR_EXPIRED = "CURSOR_EXPIRED"
_KINDS = {
    delegation_pb2.REVOCATION_KIND_TOKEN: RevocationKind.TOKEN,
    delegation_pb2.REVOCATION_KIND_CHAIN: RevocationKind.CHAIN,
    delegation_pb2.REVOCATION_KIND_SUBJECT: RevocationKind.SUBJECT,
    delegation_pb2.REVOCATION_KIND_CLIENT: RevocationKind.CLIENT,
}
_CONTROL_TYPES = frozenset(
    {delegation_pb2.WATCH_MESSAGE_TYPE_HEARTBEAT, delegation_pb2.WATCH_MESSAGE_TYPE_SNAPSHOT_COMPLETE}
)
MAX_BACKOFF_SECONDS = 2.0


def revocation_of(message: delegation_pb2.WatchRevocationsResponse) -> RevocationEvent | None:
    """The revocation a stream message carries, or ``None`` for a control message or an unknown kind."""
    if message.type in _CONTROL_TYPES:
        return None
    kind = _KINDS.get(message.kind)
    if kind is None:
        return None
    return RevocationEvent(
        cursor=message.cursor,
        kind=kind,
        chain_id=message.chain_id,
        token_id=message.token_id,
        subject=message.subject,
        client_id=message.client_id,
        revoked_at=message.revoke_time.seconds,
        expires_at=message.expire_time.seconds,
    )


class RevocationFeed:
    """Keeps a mirror in step with the service's revocation stream until :meth:`stop`."""

    def __init__(
        self,
        channel: grpc.Channel,
        mirror: RevocationMirror,
        clock: FeedClock,
        *,
        heartbeat_seconds: int = 1,
        metadata: Sequence[tuple[str, str]] = (),
        on_message: Callable[[], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stub = delegation_pb2_grpc.DelegationServiceStub(channel)
        self._mirror = mirror
        self._clock = clock
        self._heartbeat_seconds = heartbeat_seconds
        self._metadata = tuple(metadata)
        self._on_message = on_message
        self._monotonic = monotonic
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._call: Any = None
        self._call_lock = threading.Lock()
        self._connected = False
        self.cursor = ""
        self.reconnects = 0
        self.resyncs = 0
        self.heartbeats_seen = False

    @property
    def connected(self) -> bool:
        """Whether a stream is open right now."""
        return self._connected

    def start(self) -> RevocationFeed:
        """Start following on a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="edge-revocation-feed", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop following and wait for the thread."""
        self._stop.set()
        with self._call_lock:
            if self._call is not None:
                self._call.cancel()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def _run(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            try:
                if self._follow_once():
                    backoff = 0.05  # the stream delivered something: reconnect at once next time
            except grpc.RpcError as error:
                details = error_details(error)
                if details.code is grpc.StatusCode.CANCELLED and self._stop.is_set():
                    return
                if details.code is grpc.StatusCode.OUT_OF_RANGE and details.reason == CURSOR_EXPIRED:
                    log.warning("revocation cursor expired: resynchronising from a snapshot")
                    self.cursor = ""
                    self.resyncs += 1
                    continue
                log.info("revocation stream ended (%s %s): resuming", details.code.name, details.reason)
            finally:
                self._connected = False
            self.reconnects += 1
            self._stop.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    def _follow_once(self) -> bool:
        """Follow one stream until it ends; return whether it delivered any message."""
        snapshot = not self.cursor
        request = delegation_pb2.WatchRevocationsRequest(
            cursor=self.cursor,
            include_snapshot=snapshot,
            heartbeat_interval=duration_pb2.Duration(seconds=self._heartbeat_seconds),
        )
        call = self._stub.WatchRevocations(request, metadata=self._metadata)
        with self._call_lock:
            self._call = call
        if self._stop.is_set():
            call.cancel()
        delivered = False
        in_snapshot = snapshot
        self._connected = True
        for message in _messages(call):
            delivered = True
            now = self._monotonic()
            if message.type != delegation_pb2.WATCH_MESSAGE_TYPE_UNSPECIFIED:
                self.heartbeats_seen = True
            revocation = revocation_of(message)
            if revocation is not None:
                self._mirror.apply(revocation)
            if message.cursor:
                self.cursor = message.cursor
            if message.type == delegation_pb2.WATCH_MESSAGE_TYPE_SNAPSHOT_COMPLETE:
                in_snapshot = False
            if not in_snapshot:
                self._clock.mark_current(now)
            if self._on_message is not None:
                self._on_message()
        return delivered


def _messages(call: Any) -> Iterator[delegation_pb2.WatchRevocationsResponse]:
    yield from call
