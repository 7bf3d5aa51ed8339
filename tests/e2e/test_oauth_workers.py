"""`serve --workers 2` with the OAuth port, on each of its servers (``oauth.server``): every worker
serves it (SO_REUSEPORT, as gRPC), token exchanges on fresh connections all succeed, and SIGTERM still
ends every worker with exit 0 (our signal handling, whichever server)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from devtools.redis_server import RedisServer
from tests.e2e.serving import free_port, serve

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


@pytest.mark.parametrize("server", ["threads", "granian"])
def test_every_worker_serves_the_oauth_port(tmp_path: Path, redis_server: RedisServer, server: str) -> None:
    oauth = f"127.0.0.1:{free_port()}"
    env = {
        "DELEGATION_OAUTH_SERVER": server,
        "DELEGATION_OAUTH_LISTEN": oauth,
        "DELEGATION_ADMIN_LISTEN": "",
        "DELEGATION_SERVER_DRAIN_SECONDS": "0",
    }
    with serve(tmp_path, redis_server.url, 2, env) as workers:
        workers.delegate_until_answered(time.monotonic() + 30)
        deadline = time.monotonic() + 30
        while len([e for e in workers.events("oauth_serving") if e.get("server") == server]) < 2:
            assert time.monotonic() < deadline, workers.log()[-3000:]
            time.sleep(0.2)
        form = {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": workers.parent,
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "audience": "billing",
            "scope": "warehouse.items.r",
        }
        for _ in range(20):  # a new connection each: the kernel spreads them over the workers
            answer = requests.post(f"http://{oauth}/oauth2/token", data=form, timeout=5)
            assert answer.status_code == 200, answer.text
        assert workers.stop() == 0, workers.log()[-3000:]
