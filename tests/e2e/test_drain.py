"""SIGTERM with 192 calls in flight and more arriving: no call ends CANCELLED (SPEC §7, issue 11).

`delegation-service serve` runs as a subprocess over the session's real redis-server, with one worker
and with ``--workers 2``. A bounded load keeps 192 Delegate and Introspect calls outstanding (grpc
futures over a few channels); the signal lands mid-flight and new calls keep coming until the process
is gone. Every call must end OK or UNAVAILABLE, and an open revocation stream must end UNAVAILABLE with
reason SERVER_DRAINING (resumable from its last cursor).
"""

from __future__ import annotations

import collections
import signal
import threading
import time
from pathlib import Path
from typing import Any, cast

import grpc
import pytest

from delegation.v1 import delegation_pb2, delegation_pb2_grpc
from delegation_service.client import DelegationClient, error_details
from tests.e2e.serving import Served, serve

pytestmark = pytest.mark.redis

IN_FLIGHT = 192
CHANNELS = 8
MAX_CALLS = 20000
"""A bound on the whole load, whatever the machine's speed."""
RETRY_BACKOFF_SECONDS = 0.05
"""A caller refused waits this long before its next call, as a client honouring backoff would."""
LOAD_SECONDS = 40.0
CALL_TIMEOUT_SECONDS = 30.0
START_TIMEOUT_SECONDS = 30.0
DRAIN_ENV = {
    "DELEGATION_SERVER_DRAIN_SECONDS": "1.0",
    "DELEGATION_SERVER_GRACE_SECONDS": "20",
    "DELEGATION_ACCESS_MODE": "open",  # loopback only: Introspect and the stream need no credentials
}


class Load:
    """192 callers, alternating Delegate and Introspect, each calling again as soon as it is answered
    (after a short backoff when refused), until told to stop."""

    def __init__(self, served: Served, child: str) -> None:
        self._channels = [grpc.insecure_channel(served.address) for _ in range(CHANNELS)]
        self._stubs = [delegation_pb2_grpc.DelegationServiceStub(c) for c in self._channels]
        self._delegate = delegation_pb2.DelegateRequest(
            parent_token=served.parent, client_id="billing", scopes=["warehouse.items.r"]
        )
        self._introspect = delegation_pb2.IntrospectRequest(token=child)
        self._lock = threading.Condition()
        self._sent = 0
        self._outstanding = 0
        self._firing = True
        self.signalled_at_call: int | None = None
        self.codes_before: collections.Counter[str] = collections.Counter()
        self.codes_after: collections.Counter[str] = collections.Counter()
        self.reasons_after: collections.Counter[str] = collections.Counter()
        self._retries: collections.deque[float] = collections.deque()  # due times, in order
        self._retrier = threading.Thread(target=self._retry_when_due, daemon=True)

    def start(self) -> None:
        for _ in range(IN_FLIGHT):
            self._fire()
        self._retrier.start()

    def _retry_when_due(self) -> None:
        while True:
            with self._lock:
                if not self._firing and not self._retries:
                    return
                now, ready = time.monotonic(), 0
                while self._retries and self._retries[0] <= now:  # appended in order of due time
                    self._retries.popleft()
                    ready += 1
            for _ in range(ready):
                self._fire()
            time.sleep(0.005)

    def sent(self) -> int:
        with self._lock:
            return self._sent

    def outstanding(self) -> int:
        with self._lock:
            return self._outstanding

    def mark_signal(self) -> None:
        with self._lock:
            self.signalled_at_call = self._sent

    def stop_firing(self) -> None:
        with self._lock:
            self._firing = False

    def wait_done(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._outstanding and time.monotonic() < deadline:
                self._lock.wait(0.1)
            return not self._outstanding

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def _fire(self) -> None:
        with self._lock:
            if not self._firing or self._sent >= MAX_CALLS:
                self._retries.clear()
                return
            number = self._sent
            self._sent += 1
            self._outstanding += 1
        stub = self._stubs[number % CHANNELS]
        future: grpc.Future[Any]
        if number % 2:
            future = stub.Introspect.future(self._introspect, timeout=CALL_TIMEOUT_SECONDS)
        else:
            future = stub.Delegate.future(self._delegate, timeout=CALL_TIMEOUT_SECONDS)
        future.add_done_callback(lambda done: self._finished(number, done))

    def _finished(self, number: int, future: grpc.Future[Any]) -> None:
        error = cast(grpc.RpcError | None, future.exception())  # a call's future fails with its RpcError
        code = "OK" if error is None else error.code().name
        with self._lock:
            after = self.signalled_at_call is not None and number >= self.signalled_at_call
            (self.codes_after if after else self.codes_before)[code] += 1
            if after and error is not None:
                self.reasons_after[error_details(error).reason] += 1
            self._outstanding -= 1
            self._lock.notify_all()
            if error is not None:
                self._retries.append(time.monotonic() + RETRY_BACKOFF_SECONDS)
                return
        self._fire()  # the caller's next call


def follow(served: Served, opened: threading.Event) -> tuple[str, str]:
    """Follow the revocation stream until it ends: its code and ErrorInfo reason."""
    with DelegationClient(served.address) as client:
        stream = client.public.WatchRevocations(delegation_pb2.WatchRevocationsRequest(), timeout=60)
        opened.set()
        try:
            for _ in stream:
                pass
        except grpc.RpcError as error:
            return error.code().name, error_details(error).reason
        return "OK", ""


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_with_192_calls_in_flight_cancels_none(
    tmp_path: Path, redis_server: object, workers: int
) -> None:
    with serve(tmp_path, redis_server.url, workers, DRAIN_ENV) as served:  # type: ignore[attr-defined]
        served.delegate_until_answered(time.monotonic() + START_TIMEOUT_SECONDS)
        with DelegationClient(served.address, timeout=5) as client:
            child = client.delegate(served.parent, "billing", ["warehouse.items.r"]).access_token
        opened = threading.Event()
        result: list[tuple[str, str]] = []
        follower = threading.Thread(target=lambda: result.append(follow(served, opened)), daemon=True)
        follower.start()
        assert opened.wait(5)
        load = Load(served, child)
        try:
            load.start()
            began = time.monotonic()
            # Mid-flight: some calls answered, the rest of the 192 still outstanding.
            while sum(load.codes_before.values()) < IN_FLIGHT and time.monotonic() < began + LOAD_SECONDS:
                time.sleep(0.01)
            in_flight_at_signal = load.outstanding()
            load.mark_signal()
            served.process.send_signal(signal.SIGTERM)
            # New calls keep coming through the drain, the refusals and the exit, and a moment after.
            exit_code = served.process.wait(timeout=LOAD_SECONDS)
            time.sleep(0.5)
            load.stop_firing()
            assert load.wait_done(CALL_TIMEOUT_SECONDS + 5)
        finally:
            load.stop_firing()
            load.close()
        assert load.sent() < MAX_CALLS, "the load ran out before the process exited"
        follower.join(timeout=10)

    codes = load.codes_before + load.codes_after
    assert in_flight_at_signal >= IN_FLIGHT - CHANNELS  # less the few being replaced this instant
    assert "CANCELLED" not in codes, (codes, served.log()[-3000:])
    assert set(codes) <= {"OK", "UNAVAILABLE"}, codes
    assert set(load.codes_before) == {"OK"}
    # Served during the drain period, refused (UNAVAILABLE) once it was over.
    assert load.codes_after["OK"] > 0 and load.codes_after["UNAVAILABLE"] > 0, load.codes_after
    assert exit_code == 0, served.log()[-3000:]
    assert result == [("UNAVAILABLE", "SERVER_DRAINING")]
    drained = served.events("drained")
    assert len(drained) == workers and all(entry["in_flight"] == 0 for entry in drained), drained
