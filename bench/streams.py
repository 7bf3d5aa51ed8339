"""``python -m bench.streams``: hold WatchRevocations streams open against a server, for the bench.

Opens ``--count`` streams (each asking for the snapshot) spread over a few channels, waits until every
one has received its SNAPSHOT_COMPLETE marker, writes ``--ready-file``, then keeps them open until
SIGTERM or ``--seconds`` (it stops by itself). It reads nothing more: an idle follower costs the server
only a sleeping thread, which is what the bench compares against a server with no followers.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import grpc

from delegation.v1 import delegation_pb2, delegation_pb2_grpc

CHANNELS = 10
OPEN_TIMEOUT_SECONDS = 60.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.streams", description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True, help="host:port of the server (loopback)")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=1800.0, help="stop by itself after this long")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    channels = [grpc.insecure_channel(args.address) for _ in range(CHANNELS)]
    stubs = [delegation_pb2_grpc.DelegationServiceStub(channel) for channel in channels]
    request = delegation_pb2.WatchRevocationsRequest(include_snapshot=True)
    calls = [stubs[i % CHANNELS].WatchRevocations(request, timeout=args.seconds) for i in range(args.count)]
    opened = threading.Semaphore(0)
    failures: list[str] = []

    def first_message(call: grpc.Call) -> None:
        try:
            for message in call:  # type: ignore[attr-defined]
                if message.type == delegation_pb2.WATCH_MESSAGE_TYPE_SNAPSHOT_COMPLETE:
                    opened.release()
                    return
        except grpc.RpcError as error:
            failures.append(error.code().name)
            opened.release()

    readers = [threading.Thread(target=first_message, args=(call,), daemon=True) for call in calls]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + OPEN_TIMEOUT_SECONDS
    for _ in calls:
        if not opened.acquire(timeout=max(0.0, deadline - time.monotonic())):
            print("bench.streams: streams did not open in time", file=sys.stderr)
            return 1
    if failures:
        print(f"bench.streams: {len(failures)} streams failed: {sorted(set(failures))}", file=sys.stderr)
        return 1
    args.ready_file.write_text(f"{len(calls)}\n")
    stop.wait(args.seconds)
    for call in calls:
        call.cancel()
    for channel in channels:
        channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
