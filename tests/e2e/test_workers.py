"""`serve --workers 2`: two processes answer on one port, /metrics adds up both, SIGTERM stops them all,
a worker that is killed comes back, and one that crashes at every start makes the supervisor give up."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from devtools.redis_server import RedisServer
from tests.e2e.serving import Served, free_port, serve

START_TIMEOUT_SECONDS = 30
FAST_RESTARTS = {
    "DELEGATION_WORKERS_RESTART_BACKOFF_SECONDS": "0.1",
    "DELEGATION_WORKERS_RESTART_BACKOFF_MAX_SECONDS": "0.4",
}


@contextlib.contextmanager
def two_workers(
    tmp_path: Path, redis_url: str, admin_listen: str, environ: dict[str, str] | None = None
) -> Iterator[Served]:
    """Start two workers; on exit, SIGTERM and expect exit 0."""
    env = {"DELEGATION_ADMIN_LISTEN": admin_listen, "DELEGATION_SERVER_DRAIN_SECONDS": "0", **(environ or {})}
    with serve(tmp_path, redis_url, 2, env) as workers:
        yield workers
        code = workers.stop()
        assert code == 0, workers.log()[-3000:]


def test_two_workers_serve_one_port_and_stop_on_sigterm(tmp_path: Path, redis_server: RedisServer) -> None:
    with two_workers(tmp_path, redis_server.url, "") as workers:
        workers.delegate_until_answered(time.monotonic() + 30)
        workers.delegate_on_fresh_channels(10)  # every call succeeds, whichever worker answers
        assert len(workers.children()) >= 2


def _scrape_when_up(url: str, deadline: float) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    while True:
        try:
            return _scrape(url)
        except OSError:
            assert time.monotonic() < deadline, "the admin port never answered"
            time.sleep(0.2)


def _process_state(pid: int) -> str:
    """The kernel's state letter of a process ("Z" once it died and awaits its parent; "" when gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return ""
    return next((line.split()[1] for line in status.splitlines() if line.startswith("State:")), "")


def _wait_for(condition: object, deadline: float, what: str) -> None:
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _delegate_ok(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    labels = {
        "grpc_type": "UNARY",
        "grpc_service": "delegation.v1.DelegationService",
        "grpc_method": "Delegate",
        "grpc_code": "OK",
    }
    return samples.get(("grpc_server_handled_total", tuple(sorted(labels.items()))), 0.0)


def _environ(pid: str) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
    return dict(entry.split("=", 1) for entry in entries if "=" in entry)


def _merged(files: Iterable[Path]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of one worker's metric files, as the MultiProcessCollector reads them."""
    families = MultiProcessCollector.merge([str(f) for f in files])  # type: ignore[no-untyped-call]
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families
        for sample in family.samples
    }


def test_metrics_of_two_workers_add_up_on_the_admin_port(tmp_path: Path, redis_server: RedisServer) -> None:
    admin = f"127.0.0.1:{free_port()}"
    with two_workers(tmp_path, redis_server.url, admin) as workers:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        before = _delegate_ok(_scrape_when_up(f"http://{admin}/metrics", deadline))
        workers.delegate_until_answered(deadline)
        workers.delegate_on_fresh_channels(29)
        calls = 30

        after = _scrape(f"http://{admin}/metrics")

        assert _delegate_ok(after) - before == calls
        issued = after[("delegation_tokens_issued_total", (("client_id", "billing"),))]
        assert issued == calls + before  # every earlier OK Delegate minted too
        assert not any(dict(labels).get("pid") for _, labels in after)  # summed, not one series per worker
        assert after[("delegation_verification_keys", ())] == 1
        names = {name for name, _ in after}
        assert {"delegation_signing_key_info", "delegation_build_info", "python_info"} <= names
        children = workers.children()
        # The supervisor's children: the two workers and multiprocessing's resource tracker.
        with_metrics = [pid for pid in children if "PROMETHEUS_MULTIPROC_DIR" in _environ(pid)]
        metrics_dir = Path(_environ(with_metrics[0])["PROMETHEUS_MULTIPROC_DIR"])
        pids = [pid for pid in with_metrics if list(metrics_dir.glob(f"*_{pid}.db"))]
        assert len(pids) == 2, (children, sorted(p.name for p in metrics_dir.iterdir()))
        # Each worker served some of the calls, and /metrics is their sum.
        per_worker = [_delegate_ok(_merged(metrics_dir.glob(f"*_{pid}.db"))) for pid in pids]
        assert all(count > 0 for count in per_worker), per_worker
        assert sum(per_worker) == _delegate_ok(after)
    assert not metrics_dir.exists()  # the supervisor removed its metrics directory


def _restarts(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    return samples.get(("delegation_worker_restarts_total", ()), -1.0)


def test_a_killed_worker_is_restarted_while_the_port_keeps_answering(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    admin = f"127.0.0.1:{free_port()}"
    with two_workers(tmp_path, redis_server.url, admin, FAST_RESTARTS) as workers:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        workers.delegate_until_answered(deadline)
        assert _restarts(_scrape_when_up(f"http://{admin}/metrics", deadline)) == 0
        (started,) = workers.events("workers")
        first, second = started["pids"]

        os.kill(second, signal.SIGKILL)  # the second worker: the first serves /metrics
        _wait_for(lambda: _process_state(second) in ("Z", ""), deadline, "the worker did not die")
        # The port answers while the worker is down. A connection being set up at the instant a
        # worker dies or starts can be reset (seen, not explained, on Linux with SO_REUSEPORT):
        # gRPC's reconnection (wait_for_ready) gets through.
        workers.delegate_on_fresh_channels(10, wait_for_ready=True)

        _wait_for(lambda: workers.events("worker_restarted"), deadline, "the worker was not restarted")
        (restarted,) = workers.events("worker_restarted")
        assert restarted["worker"] == 1 and restarted["worker_restarts_total"] == 1
        assert restarted["pid"] not in (first, second) and str(restarted["pid"]) in workers.children()
        (exited,) = workers.events("worker_exited")
        assert exited["exit_code"] == -signal.SIGKILL
        assert _restarts(_scrape(f"http://{admin}/metrics")) == 1

        # The new worker serves: fresh connections reach it too (SO_REUSEPORT spreads them).
        metrics_dir = Path(_environ(str(first))["PROMETHEUS_MULTIPROC_DIR"])

        def new_worker_files() -> list[Path]:
            return list(metrics_dir.glob(f"*_{restarted['pid']}.db"))

        served_by_new = 0.0
        while not served_by_new and time.monotonic() < deadline:  # it needs a moment to start
            workers.delegate_on_fresh_channels(5, wait_for_ready=True)
            served_by_new = _delegate_ok(_merged(new_worker_files())) if new_worker_files() else 0.0
        assert served_by_new > 0, "the restarted worker never served"


def test_a_worker_that_crashes_at_every_start_makes_the_supervisor_give_up(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    def break_signing_key(folder: Path) -> None:
        (folder / "signing.pem").write_text("not a PEM key\n")  # read by each worker, not the supervisor

    environ = {**FAST_RESTARTS, "DELEGATION_WORKERS_CRASH_LOOP_CRASHES": "2"}
    with serve(tmp_path, redis_server.url, 2, environ, prepare=break_signing_key) as workers:
        code = workers.process.wait(timeout=90)
        assert code == 1, workers.log()[-3000:]
        (crash_loop,) = workers.events("crash_loop")
        assert "crash loop, giving up" in crash_loop["message"]
        assert len(workers.events("worker_restarted")) >= 2  # restarted, with backoff, before giving up
        assert not workers.children()
