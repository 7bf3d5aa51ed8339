"""Redis Sentinel mode: the service finds the master through a real redis-sentinel and works on it."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest
import redis

from delegation_service.app import sentinel_addresses
from delegation_service.config import ConfigError
from devtools.redis_server import LOOPBACK, RedisServer, free_loopback_port, stop_process
from tests.conftest import start_redis_server
from tests.integration.harness import start_harness

SENTINEL_START_SECONDS = 10.0


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A master and one sentinel monitoring it as ``mymaster``; yields the sentinel's host:port."""
    folder = tmp_path_factory.mktemp("sentinel")
    master: RedisServer = start_redis_server(folder / "master")
    port = free_loopback_port()
    conf = folder / "sentinel.conf"  # a sentinel rewrites its config file, so it must be its own
    conf.write_text(
        f"port {port}\nbind {LOOPBACK}\ndir {folder}\n"
        f"sentinel monitor mymaster {LOOPBACK} {master.port} 1\n"
        "sentinel down-after-milliseconds mymaster 1000\n"
    )
    process = subprocess.Popen(
        ["redis-server", str(conf), "--sentinel"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    probe = redis.Redis(host=LOOPBACK, port=port, socket_timeout=1, socket_connect_timeout=1)
    try:
        deadline = time.monotonic() + SENTINEL_START_SECONDS
        while True:
            try:
                # redis-py leaves execute_command unannotated.
                if probe.execute_command("SENTINEL", "get-master-addr-by-name", "mymaster"):  # type: ignore[no-untyped-call]
                    break
            except redis.ConnectionError:
                pass
            assert time.monotonic() < deadline, "redis-sentinel never reported the master"
            time.sleep(0.05)
        yield f"{LOOPBACK}:{port}"
    finally:
        probe.close()
        stop_process(process)
        master.stop()


def test_delegate_introspect_and_revoke_through_sentinel(sentinel: str) -> None:
    harness = start_harness(sentinel, redis_mode="sentinel")
    try:
        with harness.client() as client:
            parent = harness.parent()
            child = client.delegate(parent, "billing", ["warehouse.items.r"]).access_token
            assert client.introspect(child).active
            client.revoke(parent)
            assert not client.introspect(child).active
    finally:
        harness.server.stop(0)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("127.0.0.1:26379", [("127.0.0.1", 26379)]),
        ("a:1,b:2", [("a", 1), ("b", 2)]),
        ("redis+sentinel://s1:26379,s2:26380/", [("s1", 26379), ("s2", 26380)]),
    ],
)
def test_sentinel_addresses_are_host_port_lists(url: str, expected: list[tuple[str, int]]) -> None:
    assert sentinel_addresses(url) == expected


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "nohost", "h:", "h:99999", "a:1,,b:2"])
def test_a_malformed_sentinel_list_names_the_setting(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        sentinel_addresses(url)
    assert caught.value.setting == "redis.url"
